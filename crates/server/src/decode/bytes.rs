//! KServe BYTES tensors in the binary tensor extension: each element is a little-endian u32
//! length followed by that many bytes (any bytes: a picture, or UTF-8 text that the model
//! reading it checks).

use crate::error::Error;

/// The binary extension's BYTES layout: each element is a little-endian u32 length and then
/// that many bytes.
pub fn decode_bytes_elements(mut b: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let i = out.len();
        let field = || format!("inputs[0] element {i}");
        if b.len() < 4 {
            return Err(Error::invalid(field(), format!("BYTES element {i} is cut off inside its 4-byte length")));
        }
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if b.len() - 4 < n {
            return Err(Error::invalid(
                field(),
                format!("BYTES element {i} declares {n} bytes but only {} remain", b.len() - 4),
            ));
        }
        out.push(b[4..4 + n].to_vec());
        b = &b[4 + n..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_elements() {
        let mut b = Vec::new();
        for s in ["hi", "", "héllo"] {
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        assert_eq!(decode_bytes_elements(&b).unwrap(), [&b"hi"[..], b"", "h\u{e9}llo".as_bytes()]);
        assert!(decode_bytes_elements(&b[..b.len() - 1]).unwrap_err().to_string().contains("declares 6 bytes"));
        assert!(decode_bytes_elements(&[1, 0]).unwrap_err().to_string().contains("cut off"));
    }
}
