//! A minimal EBML writer: element ids, variable-length sizes and the scalar element types
//! Matroska uses, appended to a caller-owned `Vec<u8>` (no allocation of its own).
//!
//! Invariants:
//! - ids are written as given (their marker bits are part of the id, as in the specs);
//! - sizes are written in the shortest vint that holds them unless a length is asked for,
//!   so a region can be rewritten in place with the same byte length;
//! - a master element whose body is not known yet is opened with an 8-byte size placeholder
//!   ([`begin_master`]) and closed with [`end_master`], which patches the size in place.

/// The reserved "unknown size" value in an 8-byte vint: a reader takes the element to run
/// until a parent-level element (or the end of the file) is met.
pub const UNKNOWN_SIZE_8: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// The largest size an 8-byte vint can carry (all ones is reserved for "unknown").
pub const MAX_SIZE_8: u64 = (1 << 56) - 2;

/// The Void element id: padding a reader skips anywhere.
pub const VOID: u32 = 0xEC;

/// Appends an element id (1 to 4 bytes, marker bits included in `id`).
pub fn write_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8) as usize;
    out.extend_from_slice(&bytes[skip.min(3)..]);
}

/// How many bytes the shortest vint for `size` takes (1..=8).
pub fn size_len(size: u64) -> usize {
    // A vint of n bytes carries 7n bits; all ones is reserved, hence `<` and not `<=`.
    (1..=8).find(|n| size < (1u64 << (7 * n)) - 1).unwrap_or(8)
}

/// Appends `size` as a vint of exactly `len` bytes (`len` in 1..=8, large enough).
pub fn write_size_len(out: &mut Vec<u8>, size: u64, len: usize) {
    debug_assert!((1..=8).contains(&len) && size_len(size) <= len);
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

/// Appends `size` as the shortest vint.
pub fn write_size(out: &mut Vec<u8>, size: u64) {
    write_size_len(out, size, size_len(size));
}

/// An 8-byte vint of `size`, as stored in a fixed-length size field that is patched later.
pub fn size8(size: u64) -> [u8; 8] {
    let mut b = (size.min(MAX_SIZE_8) | (1u64 << 56)).to_be_bytes();
    b[0] = 0x01;
    b
}

/// Appends an unsigned integer element in its shortest big-endian form (0 takes one byte).
pub fn write_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let len = (8 - value.leading_zeros() as usize / 8).max(1);
    write_id(out, id);
    write_size(out, len as u64);
    out.extend_from_slice(&value.to_be_bytes()[8 - len..]);
}

/// Appends an unsigned integer element taking at least `min_len` bytes (leading zeros are
/// valid EBML): lets a rewritten region keep its length.
pub fn write_uint_min_len(out: &mut Vec<u8>, id: u32, value: u64, min_len: usize) {
    let len = (8 - value.leading_zeros() as usize / 8).max(min_len.clamp(1, 8));
    write_id(out, id);
    write_size(out, len as u64);
    out.extend_from_slice(&value.to_be_bytes()[8 - len..]);
}

/// Appends a signed integer element (8 bytes: simple and always valid).
pub fn write_int(out: &mut Vec<u8>, id: u32, value: i64) {
    write_id(out, id);
    write_size(out, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a float element as an 8-byte IEEE double (fixed length: rewritable in place).
pub fn write_float(out: &mut Vec<u8>, id: u32, value: f64) {
    write_id(out, id);
    write_size(out, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a binary element.
pub fn write_bytes(out: &mut Vec<u8>, id: u32, value: &[u8]) {
    write_id(out, id);
    write_size(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Appends a string element (ASCII or UTF-8 per the element's type).
pub fn write_str(out: &mut Vec<u8>, id: u32, value: &str) {
    write_bytes(out, id, value.as_bytes());
}

/// Opens a master element whose size is patched by [`end_master`]; returns the position of
/// its size field.
pub fn begin_master(out: &mut Vec<u8>, id: u32) -> usize {
    write_id(out, id);
    let at = out.len();
    out.extend_from_slice(&UNKNOWN_SIZE_8);
    at
}

/// Patches the size of the master element opened at `size_at` to cover everything appended
/// since.
pub fn end_master(out: &mut [u8], size_at: usize) {
    let size = (out.len() - size_at - 8) as u64;
    out[size_at..size_at + 8].copy_from_slice(&size8(size));
}

/// Appends a Void element occupying exactly `len` bytes in total. `len` must not be 1 (no
/// element is one byte long); returns false (and writes nothing) when it is.
pub fn write_void(out: &mut Vec<u8>, len: usize) -> bool {
    match len {
        0 => true,
        1 => false,
        2..=9 => {
            write_id(out, VOID);
            write_size_len(out, (len - 2) as u64, 1);
            out.resize(out.len() + len - 2, 0);
            true
        }
        _ => {
            write_id(out, VOID);
            write_size_len(out, (len - 9) as u64, 8);
            out.resize(out.len() + len - 9, 0);
            true
        }
    }
}

#[cfg(test)]
pub(crate) mod reader {
    //! A test-only EBML reader, to check what the writer produced.

    #[derive(Debug, Clone)]
    pub struct Element {
        pub id: u32,
        /// None: unknown size.
        pub size: Option<u64>,
        pub header_len: usize,
        pub offset: usize,
    }

    pub fn read_id(b: &[u8]) -> Option<(u32, usize)> {
        let first = *b.first()?;
        let len = first.leading_zeros() as usize + 1;
        if len > 4 || b.len() < len {
            return None;
        }
        Some((b[..len].iter().fold(0u32, |a, &x| (a << 8) | x as u32), len))
    }

    pub fn read_size(b: &[u8]) -> Option<(Option<u64>, usize)> {
        let first = *b.first()?;
        let len = first.leading_zeros() as usize + 1;
        if len > 8 || b.len() < len {
            return None;
        }
        let mut v = (first as u64) & ((1u64 << (8 - len)) - 1);
        for &x in &b[1..len] {
            v = (v << 8) | x as u64;
        }
        let unknown = v == (1u64 << (7 * len)) - 1;
        Some((if unknown { None } else { Some(v) }, len))
    }

    pub fn read_element(b: &[u8], offset: usize) -> Option<Element> {
        let (id, il) = read_id(&b[offset..])?;
        let (size, sl) = read_size(&b[offset + il..])?;
        Some(Element {
            id,
            size,
            header_len: il + sl,
            offset,
        })
    }

    /// The children of the master element spanning `b[start..end]`.
    pub fn children(b: &[u8], start: usize, end: usize) -> Vec<Element> {
        let mut out = Vec::new();
        let mut at = start;
        while at < end {
            let Some(e) = read_element(b, at) else { break };
            let next = match e.size {
                Some(s) => at + e.header_len + s as usize,
                None => end,
            };
            out.push(e);
            at = next;
        }
        out
    }

    pub fn uint(b: &[u8], e: &Element) -> u64 {
        let s = e.offset + e.header_len;
        b[s..s + e.size.unwrap() as usize]
            .iter()
            .fold(0, |a, &x| (a << 8) | x as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::reader::*;
    use super::*;

    #[test]
    fn ids_keep_their_marker_bits() {
        let mut v = Vec::new();
        write_id(&mut v, 0x1A45DFA3);
        write_id(&mut v, 0x4286);
        write_id(&mut v, 0xA3);
        write_id(&mut v, 0x2AD7B1);
        assert_eq!(
            v,
            [0x1A, 0x45, 0xDF, 0xA3, 0x42, 0x86, 0xA3, 0x2A, 0xD7, 0xB1]
        );
    }

    #[test]
    fn sizes() {
        let mut v = Vec::new();
        write_size(&mut v, 0);
        write_size(&mut v, 126);
        write_size(&mut v, 127); // all ones in one byte is reserved: takes two
        write_size(&mut v, 0x3FFE);
        write_size(&mut v, 0x3FFF);
        assert_eq!(v, [0x80, 0xFE, 0x40, 0x7F, 0x7F, 0xFE, 0x20, 0x3F, 0xFF]);
        assert_eq!(size8(5), [0x01, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(size_len(MAX_SIZE_8), 8);
        for s in [0u64, 1, 126, 127, 1000, 1 << 20, MAX_SIZE_8] {
            let mut v = Vec::new();
            write_size(&mut v, s);
            assert_eq!(read_size(&v), Some((Some(s), v.len())));
            for len in size_len(s)..=8 {
                let mut w = Vec::new();
                write_size_len(&mut w, s, len);
                assert_eq!(read_size(&w), Some((Some(s), len)));
            }
        }
        assert_eq!(read_size(&UNKNOWN_SIZE_8), Some((None, 8)));
    }

    #[test]
    fn scalars() {
        let mut v = Vec::new();
        write_uint(&mut v, 0xD7, 0);
        write_uint(&mut v, 0xD7, 1);
        write_uint(&mut v, 0x2AD7B1, 1_000_000);
        assert_eq!(
            v,
            [
                0xD7, 0x81, 0x00, 0xD7, 0x81, 0x01, 0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40
            ]
        );
        let mut f = Vec::new();
        write_float(&mut f, 0x4489, 1.5);
        assert_eq!(&f[..3], &[0x44, 0x89, 0x88]);
        assert_eq!(f64::from_be_bytes(f[3..].try_into().unwrap()), 1.5);
        let mut s = Vec::new();
        write_str(&mut s, 0x4282, "webm");
        assert_eq!(s, [0x42, 0x82, 0x84, b'w', b'e', b'b', b'm']);
    }

    #[test]
    fn masters_are_patched() {
        let mut v = vec![0xAA];
        let at = begin_master(&mut v, 0x1F43B675);
        write_uint(&mut v, 0xE7, 7);
        end_master(&mut v, at);
        let e = read_element(&v, 1).unwrap();
        assert_eq!(e.id, 0x1F43B675);
        assert_eq!(e.size, Some(3));
        let kids = children(&v, 1 + e.header_len, v.len());
        assert_eq!(kids.len(), 1);
        assert_eq!(uint(&v, &kids[0]), 7);
    }

    #[test]
    fn voids_fill_exactly() {
        assert!(!write_void(&mut Vec::new(), 1));
        for len in [0usize, 2, 3, 9, 10, 11, 200, 5000] {
            let mut v = Vec::new();
            assert!(write_void(&mut v, len));
            assert_eq!(v.len(), len);
            if len > 0 {
                let e = read_element(&v, 0).unwrap();
                assert_eq!(e.id, VOID);
                assert_eq!(e.header_len + e.size.unwrap() as usize, len);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn uint_roundtrip(value in proptest::num::u64::ANY) {
            let mut v = Vec::new();
            write_uint(&mut v, 0x4286, value);
            let e = read_element(&v, 0).unwrap();
            proptest::prop_assert_eq!(e.header_len + e.size.unwrap() as usize, v.len());
            proptest::prop_assert_eq!(uint(&v, &e), value);
        }
    }
}
