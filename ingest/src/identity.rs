//! File identity: which physical log file a position belongs to.
//!
//! A path names a file only until the next rotation, and an inode number
//! only until the file is deleted: the file system hands the number to the
//! next new file. A file is therefore named by its device, its inode *and*
//! a fingerprint of its first bytes. The fingerprint also recognises a copy
//! of a file (logrotate's `copytruncate`, or a compressed rotation) as the
//! content already read, whatever its inode.
//!
//! The fingerprint covers the file's first line including its newline, or
//! the first [`FINGERPRINT_MAX_BYTES`] bytes when the first line is longer.
//! Exim never rewrites a line, so once the first line is complete the
//! fingerprint never changes however much the file grows, and it can be
//! recomputed at any later time with the same result. Every Exim log line
//! starts with a timestamp (with milliseconds and the process id under
//! `+all`), so two different files practically never share a first line.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The most bytes a fingerprint covers.
pub const FINGERPRINT_MAX_BYTES: usize = 1024;

/// The two bytes every gzip member starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A hash of a file's first bytes, with the number of bytes it covers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Fingerprint {
    /// How many leading bytes the hash covers.
    pub len: u32,
    /// FNV-1a (64 bit) of those bytes, written as 16 hex digits.
    #[serde(with = "hex_u64")]
    pub hash: u64,
}

impl Fingerprint {
    /// Fingerprints the start of a file, given its first bytes.
    ///
    /// Returns `None` while the first line is still incomplete and shorter
    /// than [`FINGERPRINT_MAX_BYTES`], because the fingerprint would change
    /// when the line grows. With `final_content` the caller says the file
    /// will not grow any more (it was rotated away or is being imported):
    /// then whatever is there is fingerprinted.
    pub fn of_head(head: &[u8], final_content: bool) -> Option<Fingerprint> {
        let window = &head[..head.len().min(FINGERPRINT_MAX_BYTES)];
        let len = match memchr::memchr(b'\n', window) {
            Some(newline) => newline + 1,
            None if window.len() == FINGERPRINT_MAX_BYTES => FINGERPRINT_MAX_BYTES,
            None if final_content && !window.is_empty() => window.len(),
            None => return None,
        };
        Some(Fingerprint {
            len: len as u32,
            hash: fnv1a(&head[..len]),
        })
    }

    /// True when `head` (a file's first bytes) starts with the bytes this
    /// fingerprint was taken from.
    pub fn matches(&self, head: &[u8]) -> bool {
        let len = self.len as usize;
        head.len() >= len && fnv1a(&head[..len]) == self.hash
    }
}

/// Device, inode and fingerprint: the identity of one log file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct FileIdentity {
    /// `st_dev` of the file system holding the file.
    pub dev: u64,
    /// `st_ino`.
    pub inode: u64,
    /// Fingerprint of the first bytes; `None` while the file has no
    /// complete first line yet.
    pub fingerprint: Option<Fingerprint>,
}

impl FileIdentity {
    /// The device and inode of `meta`, with no fingerprint yet.
    pub fn of_metadata(meta: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            inode: meta.ino(),
            fingerprint: None,
        }
    }

    /// The `file_id` carried by records read from this file: a stable hash
    /// of its fingerprint, that is of its content. A renamed, copied or
    /// compressed copy of a file has the same `file_id`, so its records are
    /// recognised as the ones already read from the original, whichever way
    /// they reach the store (tailed live, backfilled, imported). A recycled
    /// inode with new content gets a new one. `None` until the fingerprint
    /// is known; no record is emitted before that.
    pub fn file_id(&self) -> Option<u64> {
        let fingerprint = self.fingerprint?;
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&fingerprint.len.to_le_bytes());
        bytes[4..].copy_from_slice(&fingerprint.hash.to_le_bytes());
        Some(fnv1a(&bytes))
    }

    /// True when `meta` describes the same device and inode.
    pub fn same_inode(&self, meta: &std::fs::Metadata) -> bool {
        self.dev == meta.dev() && self.inode == meta.ino()
    }

    /// Decides whether the file now at `path` is this file: same device,
    /// same inode, and its first bytes still match the fingerprint. This is
    /// what keeps a checkpoint from applying to a new file that was given
    /// a recycled inode number. Without a fingerprint only device and inode
    /// are compared. A missing file is not the same file.
    pub fn is_same_file(&self, path: &Path) -> io::Result<bool> {
        match File::open(path) {
            Ok(file) => self.is_same_open_file(&file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`FileIdentity::is_same_file`] for a file already open.
    pub fn is_same_open_file(&self, file: &File) -> io::Result<bool> {
        if !self.same_inode(&file.metadata()?) {
            return Ok(false);
        }
        match self.fingerprint {
            None => Ok(true),
            Some(fingerprint) => Ok(fingerprint.matches(&read_head_of(file)?)),
        }
    }
}

/// Reads up to [`FINGERPRINT_MAX_BYTES`] leading bytes of the content of
/// `path`, decompressing it first when it is gzip (told by its magic bytes).
pub fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    read_head_of(&File::open(path)?)
}

/// [`read_head`] for a file already open. For a gzip file the shared file
/// position is moved; plain files are read without moving it.
pub fn read_head_of(file: &File) -> io::Result<Vec<u8>> {
    if !is_gzip_file(file)? {
        return read_head_at(file);
    }
    let mut compressed = file.try_clone()?;
    compressed.seek(SeekFrom::Start(0))?;
    let mut head = Vec::with_capacity(FINGERPRINT_MAX_BYTES);
    flate2::read::MultiGzDecoder::new(io::BufReader::new(compressed))
        .take(FINGERPRINT_MAX_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Reads up to [`FINGERPRINT_MAX_BYTES`] leading bytes of an open plain
/// file without moving any read position.
pub(crate) fn read_head_at(file: &File) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; FINGERPRINT_MAX_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok(head)
}

/// True when the open file starts with the gzip magic bytes.
pub(crate) fn is_gzip_file(file: &File) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut filled = 0;
    while filled < 2 {
        match file.read_at(&mut magic[filled..], filled as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(magic == GZIP_MAGIC)
}

/// FNV-1a, 64 bit. Chosen because it is tiny, has a fixed definition (the
/// standard library's hasher may change between Rust releases, and these
/// values are stored in checkpoints and in every record's `file_id`), and
/// the inputs are not chosen by an adversary.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// Writes a `u64` as 16 hex digits, which survives JSON tools that turn
/// large numbers into floating point.
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{value:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        // Published test vectors of FNV-1a 64.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fingerprint_waits_for_the_first_newline() {
        assert_eq!(Fingerprint::of_head(b"2026-12-04 15:54", false), None);
        let partial = Fingerprint::of_head(b"2026-12-04 15:54", true).unwrap();
        assert_eq!(partial.len, 16);

        let one = Fingerprint::of_head(b"first line\n", false).unwrap();
        let grown = Fingerprint::of_head(b"first line\nsecond line\nthi", false).unwrap();
        assert_eq!(one, grown);
        assert_eq!(one.len, 11);
        assert!(one.matches(b"first line\nanything"));
        assert!(!one.matches(b"first line"));
        assert!(!one.matches(b"other line\n"));
    }

    #[test]
    fn fingerprint_of_a_long_first_line_covers_the_maximum() {
        let long = vec![b'x'; FINGERPRINT_MAX_BYTES + 10];
        assert_eq!(
            Fingerprint::of_head(&long[..FINGERPRINT_MAX_BYTES - 1], false),
            None
        );
        let fingerprint = Fingerprint::of_head(&long, false).unwrap();
        assert_eq!(fingerprint.len as usize, FINGERPRINT_MAX_BYTES);
    }

    #[test]
    fn file_id_names_the_content_not_the_inode() {
        let fingerprint = Fingerprint::of_head(b"line\n", false);
        let base = FileIdentity {
            dev: 1,
            inode: 1201,
            fingerprint,
        };
        let copy = FileIdentity {
            dev: 2,
            inode: 1202,
            ..base
        };
        let recycled_inode = FileIdentity {
            fingerprint: Fingerprint::of_head(b"other\n", false),
            ..base
        };
        assert!(base.file_id().is_some());
        assert_eq!(base.file_id(), copy.file_id());
        assert_ne!(base.file_id(), recycled_inode.file_id());
        assert_eq!(
            FileIdentity {
                fingerprint: None,
                ..base
            }
            .file_id(),
            None
        );
    }

    #[test]
    fn fingerprint_serialises_as_hex() {
        let fingerprint = Fingerprint { len: 5, hash: 0xab };
        let json = serde_json::to_string(&fingerprint).unwrap();
        assert_eq!(json, r#"{"len":5,"hash":"00000000000000ab"}"#);
        assert_eq!(
            serde_json::from_str::<Fingerprint>(&json).unwrap(),
            fingerprint
        );
    }
}
