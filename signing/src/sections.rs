//! Just enough of the WebAssembly binary format to find and rewrite
//! sections: the 8-byte header, then `id, LEB128 length, payload` records.

/// What a WebAssembly binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A core module (`\0asm` version 1).
    Module,
    /// A component (`\0asm` version 0x0d, layer 1).
    Component,
}

const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// The bytes are not a well-formed sequence of WebAssembly sections.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The header is neither a core module's nor a component's.
    #[error("not a WebAssembly module or component")]
    NotWasm,
    /// A section runs past the end of the file.
    #[error("truncated: a section at byte {0} runs past the end")]
    Truncated(usize),
    /// A length or name is not encoded correctly.
    #[error("malformed section at byte {0}")]
    Malformed(usize),
}

/// The kind of a binary, from its header.
pub fn kind(bytes: &[u8]) -> Result<Kind, FormatError> {
    match bytes.get(..8) {
        Some(h) if h == MODULE_HEADER => Ok(Kind::Module),
        Some(h) if h == COMPONENT_HEADER => Ok(Kind::Component),
        _ => Err(FormatError::NotWasm),
    }
}

/// One section, borrowed from the binary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Section<'a> {
    /// Section id (0 for custom sections).
    pub id: u8,
    /// The payload after the length.
    pub payload: &'a [u8],
    /// Offset just past the section.
    pub end: usize,
}

impl<'a> Section<'a> {
    /// For a custom section, its name and data.
    pub fn custom(&self) -> Option<(&'a str, &'a [u8])> {
        if self.id != 0 {
            return None;
        }
        let (len, n) = read_u32(self.payload, 0).ok()?;
        let name_end = n.checked_add(len as usize)?;
        let name = std::str::from_utf8(self.payload.get(n..name_end)?).ok()?;
        Some((name, &self.payload[name_end..]))
    }

    /// Whether this is the custom section called `name`.
    pub fn is_custom(&self, name: &str) -> bool {
        self.custom().is_some_and(|(n, _)| n == name)
    }
}

/// Reads an unsigned LEB128 u32 at `pos`; returns it and the position after.
pub(crate) fn read_u32(bytes: &[u8], pos: usize) -> Result<(u32, usize), FormatError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = *bytes.get(pos + i).ok_or(FormatError::Truncated(pos))?;
        if i == 4 && b & 0x70 != 0 {
            return Err(FormatError::Malformed(pos));
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, pos + i + 1));
        }
    }
    Err(FormatError::Malformed(pos))
}

/// Appends `v` as unsigned LEB128.
pub(crate) fn write_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends a length-prefixed byte string.
pub(crate) fn write_slice(out: &mut Vec<u8>, bytes: &[u8]) {
    write_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// All sections of a binary, in order, after checking the header.
pub(crate) fn parse(bytes: &[u8]) -> Result<(Kind, Vec<Section<'_>>), FormatError> {
    let kind = kind(bytes)?;
    let mut sections = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        let start = pos;
        let id = bytes[pos];
        let (len, after) = read_u32(bytes, pos + 1)?;
        let end = after.checked_add(len as usize).ok_or(FormatError::Malformed(start))?;
        let payload = bytes.get(after..end).ok_or(FormatError::Truncated(start))?;
        sections.push(Section { id, payload, end });
        pos = end;
    }
    Ok((kind, sections))
}

/// Appends a section with canonical length encodings, the way wasmsign2
/// re-serializes it (custom section names included).
pub(crate) fn write_canonical(out: &mut Vec<u8>, s: &Section<'_>) {
    match s.custom() {
        Some((name, data)) => write_custom(out, name, data),
        None => {
            out.push(s.id);
            write_slice(out, s.payload);
        }
    }
}

/// Appends a custom section.
pub(crate) fn write_custom(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut payload = Vec::with_capacity(name.len() + data.len() + 5);
    write_slice(&mut payload, name.as_bytes());
    payload.extend_from_slice(data);
    out.push(0);
    write_slice(out, &payload);
}

/// The header bytes of a binary of `kind`.
pub(crate) fn header(kind: Kind) -> [u8; 8] {
    match kind {
        Kind::Module => MODULE_HEADER,
        Kind::Component => COMPONENT_HEADER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_round_trips_and_rejects_overlong() {
        for v in [0, 1, 127, 128, 300, 16_384, u32::MAX] {
            let mut out = Vec::new();
            write_u32(&mut out, v);
            assert_eq!(read_u32(&out, 0), Ok((v, out.len())));
        }
        assert_eq!(read_u32(&[0x80, 0x80], 0), Err(FormatError::Truncated(0)));
        assert_eq!(
            read_u32(&[0xff, 0xff, 0xff, 0xff, 0x7f], 0),
            Err(FormatError::Malformed(0))
        );
    }

    #[test]
    fn parses_sections_and_custom_names() {
        let mut m = header(Kind::Component).to_vec();
        write_custom(&mut m, "hello", b"data");
        m.extend_from_slice(&[1, 2, 0xaa, 0xbb]);
        let (kind, s) = parse(&m).unwrap();
        assert_eq!(kind, Kind::Component);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].custom(), Some(("hello", &b"data"[..])));
        assert_eq!((s[1].id, s[1].payload), (1, &[0xaa, 0xbb][..]));
        assert_eq!(parse(&m[..m.len() - 1]).unwrap_err(), FormatError::Truncated(s[0].end));
        assert_eq!(parse(b"\0asm\x02\0\0\0").unwrap_err(), FormatError::NotWasm);
    }
}
