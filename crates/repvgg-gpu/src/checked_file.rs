//! Files this crate writes to the user's cache directory (the pipeline cache, the tuning
//! cache): a magic naming the kind and format version, a CRC-32 and the length of the payload,
//! then the payload. Anything else (missing, truncated, corrupt, another kind's) reads as
//! absent, and the caller starts empty and writes the file anew.

use std::io::Write;
use std::path::Path;

/// Header: magic, CRC-32 of the payload, payload length.
const HEADER: usize = 8 + 4 + 8;

/// `data` behind a header with `magic`.
pub(crate) fn encode(magic: &[u8; 8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The payload of a file [`encode`] wrote with `magic`, or `None` when the magic, length or
/// CRC does not match (a truncated, corrupt or foreign file).
pub(crate) fn decode<'a>(magic: &[u8; 8], file: &'a [u8]) -> Option<&'a [u8]> {
    let (header, data) = file.split_at_checked(HEADER)?;
    let (m, rest) = header.split_at(8);
    let (crc, len) = rest.split_at(4);
    let crc = u32::from_le_bytes(crc.try_into().ok()?);
    let len = u64::from_le_bytes(len.try_into().ok()?);
    (m == magic && len == data.len() as u64 && crc32fast::hash(data) == crc).then_some(data)
}

/// The payload of the file at `path`, when it is at most `max_bytes` long and intact.
pub(crate) fn read(magic: &[u8; 8], path: &Path, max_bytes: u64) -> Option<Vec<u8>> {
    let len = std::fs::metadata(path).ok()?.len();
    if len > max_bytes {
        return None;
    }
    let file = std::fs::read(path).ok()?;
    decode(magic, &file).map(<[u8]>::to_vec)
}

/// Writes `data` with `magic` to `path` through a temporary file renamed over the old one, so
/// that a reader never sees half a file.
pub(crate) fn write(magic: &[u8; 8], path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&encode(magic, data))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 8] = b"RVGGTEST";

    #[test]
    fn files_round_trip_and_damage_is_rejected() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = encode(MAGIC, &data);
        assert_eq!(decode(MAGIC, &file), Some(&data[..]));
        assert_eq!(decode(MAGIC, &encode(MAGIC, &[])), Some(&[][..]));
        assert_eq!(decode(b"RVGGELSE", &file), None);
        // Truncated anywhere, a flipped bit anywhere, trailing bytes.
        for cut in [0, 5, HEADER - 1, HEADER, file.len() - 1] {
            assert_eq!(decode(MAGIC, &file[..cut]), None, "cut at {cut}");
        }
        for i in (0..file.len()).step_by(37) {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode(MAGIC, &bad), None, "bit flipped at {i}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(decode(MAGIC, &longer), None);
    }

    #[test]
    fn read_refuses_files_over_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.bin");
        write(MAGIC, &path, b"hello").expect("write");
        assert_eq!(read(MAGIC, &path, 1000).as_deref(), Some(&b"hello"[..]));
        assert_eq!(read(MAGIC, &path, 10), None);
        assert_eq!(read(MAGIC, &dir.path().join("absent"), 1000), None);
    }
}
