# The build every C game of this repository shares: clang for wasm32-wasi
# as a reactor (no main, exports only) -> a core module, then `respawn
# component`, which adds the WASI adapter matching the host.
# Set SDK, RESPAWN, OUT and SOURCES (the game's own .c files) first.

CC_WASM ?= clang
CFLAGS ?= -O2 -Wall -Wextra -Werror
CORE := $(basename $(OUT)).core.wasm
BINDINGS := $(SDK)/bindings/room.c $(SDK)/bindings/room_component_type.o

$(OUT): $(SOURCES) $(SDK)/respawn.h $(SDK)/bindings/room.h $(BINDINGS)
	$(CC_WASM) --target=wasm32-wasi -mexec-model=reactor $(CFLAGS) -I$(SDK) -I$(SDK)/bindings \
		-o $(CORE) $(SOURCES) $(BINDINGS)
	$(RESPAWN) component $(CORE) -o $(OUT)
	rm -f $(CORE)
