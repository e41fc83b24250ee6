//! Samples leave the admin only inside a ZIP protected with the password `infected`, the
//! convention for sharing malware: no mail filter, browser or desktop opens or runs it by
//! accident. ZipCrypto (the "deprecated" zip encryption) because `unzip -P` and `7z x -p`
//! both open it; it protects against accidents, not against anyone who knows the convention.

use std::io::{Cursor, Write};
use zip::unstable::write::FileOptionsExt;
use zip::write::SimpleFileOptions;

/// The conventional password.
pub const PASSWORD: &str = "infected";

/// A ZIP holding `bytes` as `name`, encrypted with [`PASSWORD`].
pub fn encrypted_zip(name: &str, bytes: &[u8]) -> Result<Vec<u8>, zip::result::ZipError> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(bytes.len() + 512)));
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o600)
        .large_file(bytes.len() as u64 >= u32::MAX as u64)
        .with_deprecated_encryption(PASSWORD.as_bytes());
    w.start_file(name, opts)?;
    w.write_all(bytes)?;
    Ok(w.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn opens_with_the_password_only() {
        let body = b"\x7fELF\x02\x01\x01 not really".to_vec();
        let z = encrypted_zip("x.bin", &body).unwrap();
        let mut a = zip::ZipArchive::new(Cursor::new(&z)).unwrap();
        assert!(a.by_index(0).is_err(), "needs the password");
        let mut f = a.by_index_decrypt(0, PASSWORD.as_bytes()).unwrap();
        let mut out = Vec::new();
        f.read_to_end(&mut out).unwrap();
        assert_eq!(out, body);
        // The bytes are not in the clear.
        assert!(!z.windows(body.len()).any(|w| w == body.as_slice()));
    }
}
