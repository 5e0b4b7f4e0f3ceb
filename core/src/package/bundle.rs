//! Packages inside executables. A *bundle payload* is a package's files laid end to end, each at
//! a multiple of [`ALIGN`] bytes from the payload's start, then an index (the file table: path,
//! offset, size, CRC-32) and a fixed 40-byte trailer. Because every file starts on a page
//! boundary, its bytes are memory-mapped in place — weights are read from the executable itself,
//! with no extraction and no second copy.
//!
//! The payload is used two ways, with the same bytes:
//! * appended to an executable (at a multiple of [`ALIGN`]): [`write_bundle`] writes a copy of a
//!   program with a package after it; [`Package::open_embedded`] finds it at run time;
//! * embedded at build time for small packages: [`write_payload_file`] from a build script, then
//!   [`include_package!`](crate::include_package) and [`Package::from_static`].
//!
//! Opening checks the trailer, the index (its CRC, every path and range) and the CRC-32 of every
//! file, so that a truncated or modified bundle is an error, never garbage; `verify` checks the
//! sha256 recorded in metadata.json as for a package directory.

use super::Package;
use crate::files::{hex, write_atomic_with};
use crate::manifest::METADATA_FILE;
use crate::paths::check_relative;
use crate::source::FileRef;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Alignment of the payload and of every file in it: a multiple of every common page size
/// (4 KiB, 16 KiB, 64 KiB), so that each file can be mapped on its own.
pub const ALIGN: u64 = 1 << 16;

const MAGIC: [u8; 16] = *b"inferox-bundle\x00\x01";
const TRAILER_LEN: u64 = 40;
/// Largest index accepted (the file table of a package of thousands of files is far smaller).
const MAX_INDEX: u64 = 16 << 20;
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Index {
    format: u32,
    /// The executable in front of the payload, for a bundle (absent for a payload file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    program: Option<Program>,
    files: Vec<Entry>,
}

/// The executable a package was appended to: its length and sha256, checked by `verify`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Program {
    size: u64,
    sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    path: String,
    /// From the payload's start.
    offset: u64,
    size: u64,
    crc32: u32,
}

/// The trailer: payload length (up to the index), index length, index CRC-32, magic.
struct Trailer {
    payload_len: u64,
    index_len: u64,
    index_crc: u32,
}

impl Trailer {
    fn encode(&self) -> [u8; TRAILER_LEN as usize] {
        let mut out = [0u8; TRAILER_LEN as usize];
        out[0..8].copy_from_slice(&self.payload_len.to_le_bytes());
        out[8..16].copy_from_slice(&self.index_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.index_crc.to_le_bytes());
        out[24..40].copy_from_slice(&MAGIC);
        out
    }

    /// `None` when `bytes` do not end with the magic (no bundle here).
    fn decode(bytes: &[u8]) -> Option<Trailer> {
        let bytes: &[u8; TRAILER_LEN as usize] = bytes.try_into().ok()?;
        if bytes[24..40] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
        Some(Trailer {
            payload_len: u64_at(0),
            index_len: u64_at(8),
            index_crc: u32::from_le_bytes(bytes[16..20].try_into().unwrap_or_default()),
        })
    }
}

/// Where an embedded package's bytes are.
#[derive(Clone, Debug)]
enum Container {
    File(PathBuf),
    Static(&'static [u8]),
}

/// The file table of a package inside an executable or in static memory.
#[derive(Clone, Debug)]
pub(crate) struct Embedded {
    container: Container,
    /// Name of the container in messages.
    name: PathBuf,
    /// Offset of the payload in the container.
    base: u64,
    program: Option<Program>,
    files: BTreeMap<String, Entry>,
}

fn bundle_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Bundle {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Embedded {
    /// The name errors give for `rel`: `CONTAINER#rel`.
    pub(crate) fn display(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("{}#{rel}", self.name.display()))
    }

    /// The container: the executable, or a name for static bytes.
    pub(crate) fn name(&self) -> &Path {
        &self.name
    }

    /// The size of `rel`, if the bundle holds it.
    pub(crate) fn size(&self, rel: &str) -> Option<u64> {
        self.files.get(rel).map(|e| e.size)
    }

    /// `rel`'s bytes, if the bundle holds it.
    pub(crate) fn file(&self, rel: &str) -> Option<FileRef> {
        let entry = self.files.get(rel)?;
        let name = self.display(rel);
        Some(match &self.container {
            Container::File(path) => {
                FileRef::range(name, path.clone(), self.base + entry.offset, entry.size)
            }
            Container::Static(bytes) => {
                let start = (self.base + entry.offset) as usize;
                FileRef::from_static(name, &bytes[start..start + entry.size as usize])
            }
        })
    }

    /// Reads the bundle at the end of the file at `path`; `None` when it carries none.
    pub(crate) fn open_file(path: &Path) -> Result<Option<Embedded>> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let Some(trailer) = read_trailer(&mut file, len).map_err(|e| Error::io(path, e))? else {
            return Ok(None);
        };
        let (base, index_at) = layout(path, &trailer, len)?;
        let mut index = vec![0u8; trailer.index_len as usize];
        file.seek(SeekFrom::Start(index_at))
            .and_then(|_| file.read_exact(&mut index))
            .map_err(|e| Error::io(path, e))?;
        let (program, files) = parse_index(path, &trailer, &index)?;
        if program.as_ref().is_some_and(|p| p.size > base) {
            return Err(bundle_error(
                path,
                "the program recorded in the file table overlaps the package (damaged file table)",
            ));
        }
        Ok(Some(Embedded {
            container: Container::File(path.to_path_buf()),
            name: path.to_path_buf(),
            base,
            program,
            files,
        }))
    }

    /// Reads a payload held in static memory (see [`include_package!`](crate::include_package)).
    pub(crate) fn from_static(bytes: &'static [u8]) -> Result<Embedded> {
        let name = PathBuf::from("(embedded package)");
        let len = bytes.len() as u64;
        let trailer = len
            .checked_sub(TRAILER_LEN)
            .and_then(|at| Trailer::decode(&bytes[at as usize..]))
            .ok_or_else(|| {
                bundle_error(
                    &name,
                    "no bundle trailer at the end of the bytes (not a payload from `write_payload_file`, or truncated)",
                )
            })?;
        let (base, index_at) = layout(&name, &trailer, len)?;
        if base != 0 {
            return Err(bundle_error(
                &name,
                format!("{base} bytes precede the payload: pass exactly the payload file"),
            ));
        }
        let index = &bytes[index_at as usize..(index_at + trailer.index_len) as usize];
        let (program, files) = parse_index(&name, &trailer, index)?;
        if program.is_some() {
            return Err(bundle_error(
                &name,
                "these bytes are a whole bundle, not a payload: pass the payload file",
            ));
        }
        Ok(Embedded {
            container: Container::Static(bytes),
            name,
            base,
            program,
            files,
        })
    }

    /// Checks the CRC-32 of every file: a modified byte anywhere in the package is an error.
    /// Files are read with plain reads into one buffer, not mapped: sequential reads let the
    /// kernel read ahead, and nothing stays resident (the pages stay in the page cache for the
    /// load that follows).
    pub(crate) fn check_contents(&self) -> Result<()> {
        let mut buf = Vec::new();
        let mut file = match &self.container {
            Container::File(path) => {
                buf = vec![0u8; CHUNK];
                Some(std::fs::File::open(path).map_err(|e| Error::io(path, e))?)
            }
            Container::Static(_) => None,
        };
        for (rel, entry) in &self.files {
            let crc = match (&mut file, &self.container) {
                (Some(file), _) => {
                    let name = self.display(rel);
                    let mut crc = crc32fast::Hasher::new();
                    file.seek(SeekFrom::Start(self.base + entry.offset))
                        .map_err(|e| Error::io(&name, e))?;
                    let mut left = entry.size;
                    while left > 0 {
                        let n = left.min(CHUNK as u64) as usize;
                        file.read_exact(&mut buf[..n]).map_err(|e| {
                            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                                bundle_error(&name, "the bundle is truncated")
                            } else {
                                Error::io(&name, e)
                            }
                        })?;
                        crc.update(&buf[..n]);
                        left -= n as u64;
                    }
                    crc.finalize()
                }
                (None, Container::Static(bytes)) => {
                    let start = (self.base + entry.offset) as usize;
                    crc32fast::hash(&bytes[start..start + entry.size as usize])
                }
                (None, Container::File(_)) => unreachable!("opened above"),
            };
            if crc != entry.crc32 {
                return Err(bundle_error(
                    &self.display(rel),
                    "contents differ from what was bundled (CRC-32 mismatch): the bundle was modified or damaged",
                ));
            }
        }
        Ok(())
    }
}

impl Embedded {
    /// Checks the sha256 of the program in front of the package against the one recorded when
    /// the bundle was written: with the files' own hashes, `verify` covers every byte.
    pub(crate) fn verify_program(&self, progress: &mut impl FnMut(&str, u64)) -> Result<()> {
        let (Some(program), Container::File(path)) = (&self.program, &self.container) else {
            return Ok(());
        };
        progress("(program)", program.size);
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let (size, sha) = crate::files::copy_hashed(file.take(program.size), None, |_| {})
            .map_err(|e| Error::io(path, e))?;
        if size != program.size || sha != program.sha256 {
            return Err(Error::HashMismatch {
                path: PathBuf::from(format!("{} (the program part)", path.display())),
                expected: program.sha256.clone(),
                found: sha,
            });
        }
        Ok(())
    }
}

const CHUNK: usize = 1 << 20;

fn read_trailer(file: &mut std::fs::File, len: u64) -> std::io::Result<Option<Trailer>> {
    if len < TRAILER_LEN {
        return Ok(None);
    }
    let mut buf = [0u8; TRAILER_LEN as usize];
    file.seek(SeekFrom::Start(len - TRAILER_LEN))?;
    file.read_exact(&mut buf)?;
    Ok(Trailer::decode(&buf))
}

/// Where the payload and the index start, checked against the container's length.
fn layout(path: &Path, t: &Trailer, len: u64) -> Result<(u64, u64)> {
    if t.index_len > MAX_INDEX {
        return Err(bundle_error(
            path,
            format!(
                "the bundle trailer claims a {}-byte index (damaged trailer)",
                t.index_len
            ),
        ));
    }
    let base = len
        .checked_sub(TRAILER_LEN)
        .and_then(|n| n.checked_sub(t.index_len))
        .and_then(|n| n.checked_sub(t.payload_len))
        .ok_or_else(|| {
            bundle_error(
                path,
                format!(
                    "the bundle trailer describes {} bytes of package but the file holds {len}: the bundle is truncated",
                    t.payload_len.saturating_add(t.index_len)
                ),
            )
        })?;
    if base % ALIGN != 0 {
        return Err(bundle_error(
            path,
            format!(
                "the package starts at byte {base}, not at a multiple of {ALIGN}: the bundle was truncated or bytes were inserted"
            ),
        ));
    }
    Ok((base, base + t.payload_len))
}

fn parse_index(path: &Path, t: &Trailer, index: &[u8]) -> Result<(Option<Program>, Files)> {
    if crc32fast::hash(index) != t.index_crc {
        return Err(bundle_error(
            path,
            "the bundle's file table is damaged (CRC-32 mismatch)",
        ));
    }
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| bundle_error(path, format!("the bundle's file table is unreadable: {e}")))?;
    if index.format != FORMAT {
        return Err(bundle_error(
            path,
            format!(
                "bundle format {} is not supported (this build reads format {FORMAT}); bundle the package with this inferox",
                index.format
            ),
        ));
    }
    let mut files = BTreeMap::new();
    let mut ranges: Vec<(u64, u64, &str)> = Vec::new();
    for entry in &index.files {
        check_relative("bundle file table", &entry.path)?;
        let end = entry
            .offset
            .checked_add(entry.size)
            .filter(|&end| end <= t.payload_len && entry.offset % ALIGN == 0)
            .ok_or_else(|| {
                bundle_error(
                    path,
                    format!(
                        "`{}` lies outside the package bytes or off alignment (damaged file table)",
                        entry.path
                    ),
                )
            })?;
        ranges.push((entry.offset, end, &entry.path));
        if files.insert(entry.path.clone(), entry.clone()).is_some() {
            return Err(bundle_error(
                path,
                format!("`{}` is listed twice in the bundle", entry.path),
            ));
        }
    }
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(bundle_error(
                path,
                format!("`{}` and `{}` overlap in the bundle", pair[0].2, pair[1].2),
            ));
        }
    }
    Ok((index.program, files))
}

type Files = BTreeMap<String, Entry>;

/// For an ELF executable, the length of the image the linker wrote (to the end of the section
/// header table): bytes past it were appended. `None` for other formats.
fn elf_image_len(path: &Path) -> Option<u64> {
    let mut header = [0u8; 64];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    // 64-bit little-endian ELF only (what inferox builds for on Linux).
    if &header[0..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let shoff = u64::from_le_bytes(header[0x28..0x30].try_into().ok()?);
    let shentsize = u16::from_le_bytes(header[0x3a..0x3c].try_into().ok()?) as u64;
    let shnum = u16::from_le_bytes(header[0x3c..0x3e].try_into().ok()?) as u64;
    if shnum == 0 {
        return None;
    }
    shoff.checked_add(shentsize * shnum)
}

/// The package carried by the executable at `path`: `None` when it carries none. An executable
/// with bytes appended after its image but no valid trailer is a damaged bundle, an error.
pub(crate) fn embedded_in_executable(path: &Path) -> Result<Option<Embedded>> {
    if !carries_package(path)? {
        return Ok(None);
    }
    Embedded::open_file(path)
}

/// Whether the executable at `path` carries a package, checking only its trailer (cheap: the
/// package itself is checked when opened). Bytes after an ELF image with no valid trailer are
/// an error, as for [`Package::open_embedded`].
pub fn carries_package(path: &Path) -> Result<bool> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if read_trailer(&mut file, len)
        .map_err(|e| Error::io(path, e))?
        .is_some()
    {
        return Ok(true);
    }
    match elf_image_len(path) {
        Some(image) if image < len => Err(damaged(path, len - image)),
        _ => Ok(false),
    }
}

fn damaged(path: &Path, extra: u64) -> Error {
    bundle_error(
        path,
        format!(
            "{extra} bytes follow the executable's image but end in no bundle trailer: a truncated or damaged bundle"
        ),
    )
}

/// A writer that counts bytes and keeps a running CRC-32 and sha256 of one file at a time.
struct Tally<W> {
    inner: W,
    written: u64,
    crc: crc32fast::Hasher,
    sha: Sha256,
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        self.crc.update(&buf[..n]);
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Tally<W> {
    fn pad_to(&mut self, align: u64) -> std::io::Result<()> {
        let pad = self.written.next_multiple_of(align) - self.written;
        std::io::copy(&mut std::io::repeat(0).take(pad), self)?;
        Ok(())
    }
}

/// Writes `package` as a bundle payload to `out`, which must be at a multiple of [`ALIGN`] in
/// its file. Every file's sha256 is checked against metadata.json on the way (a damaged package
/// is not bundled). `progress(file, bytes)` is called before each file. Returns the bytes
/// written.
pub fn write_payload(
    package: &Package,
    out: impl Write,
    progress: impl FnMut(&str, u64),
) -> Result<u64> {
    write_payload_after(package, None, out, progress)
}

/// [`write_payload`], recording the program in front of it.
fn write_payload_after(
    package: &Package,
    program: Option<Program>,
    out: impl Write,
    mut progress: impl FnMut(&str, u64),
) -> Result<u64> {
    if package.embedded.is_some() {
        return Err(bundle_error(
            package.root(),
            "this package is itself inside a bundle: bundle its package directory instead",
        ));
    }
    let dest = Path::new("(bundle)");
    let io = |e| Error::write(dest, e);
    let mut out = Tally {
        inner: out,
        written: 0,
        crc: crc32fast::Hasher::new(),
        sha: Sha256::new(),
    };
    let mut entries = Vec::new();
    let metadata_file = METADATA_FILE.to_string();
    let listed = package.metadata.files.iter().map(|f| (&f.path, Some(f)));
    let metadata = std::iter::once((&metadata_file, None));
    for (rel, listed) in listed.chain(metadata) {
        let source = package.locate(rel, rel)?;
        let size = source.len()?;
        progress(rel, size);
        out.pad_to(ALIGN).map_err(io)?;
        let offset = out.written;
        out.crc = crc32fast::Hasher::new();
        out.sha = Sha256::new();
        std::io::copy(&mut std::io::Cursor::new(source.map()?), &mut out).map_err(io)?;
        let sha = hex(&std::mem::take(&mut out.sha).finalize());
        if let Some(entry) = listed
            && (entry.size != size || entry.sha256 != sha)
        {
            return Err(Error::HashMismatch {
                path: source.path().to_path_buf(),
                expected: entry.sha256.clone(),
                found: sha,
            });
        }
        entries.push(Entry {
            path: rel.clone(),
            offset,
            size,
            crc32: std::mem::take(&mut out.crc).finalize(),
        });
    }
    let payload_len = out.written;
    let index = serde_json::to_vec(&Index {
        format: FORMAT,
        program,
        files: entries,
    })
    .map_err(|e| Error::Bundle {
        path: dest.into(),
        message: e.to_string(),
    })?;
    let trailer = Trailer {
        payload_len,
        index_len: index.len() as u64,
        index_crc: crc32fast::hash(&index),
    };
    out.write_all(&index).map_err(io)?;
    out.write_all(&trailer.encode()).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(out.written)
}

/// Refuses to replace `output` unless `overwrite` is set and it is a bundle or payload inferox
/// wrote (its trailer says so): an overwrite only ever replaces what we wrote.
fn check_output(output: &Path, overwrite: bool) -> Result<()> {
    let meta = match std::fs::symlink_metadata(output) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(output, e)),
        Ok(meta) => meta,
    };
    if !overwrite {
        return Err(Error::AlreadyExists {
            path: output.to_path_buf(),
        });
    }
    let ours = meta.is_file()
        && std::fs::File::open(output)
            .and_then(|mut f| read_trailer(&mut f, meta.len()))
            .ok()
            .flatten()
            .is_some();
    if !ours {
        return Err(Error::NotReplaceable {
            path: output.to_path_buf(),
            reason: "it is not an inferox bundle".into(),
        });
    }
    Ok(())
}

/// Writes `package` as a payload file for [`include_package!`](crate::include_package), e.g.
/// from a build script. `overwrite` replaces an earlier payload (and nothing else).
pub fn write_payload_file(package: &Package, output: &Path, overwrite: bool) -> Result<u64> {
    check_output(output, overwrite)?;
    let mut written = 0;
    write_atomic_with(output, None, |file| {
        let mut out = std::io::BufWriter::new(file);
        written = write_payload(package, &mut out, |_, _| {})?;
        out.flush().map_err(|e| Error::write(output, e))
    })?;
    Ok(written)
}

/// Writes `output`: a copy of the executable `program` with `package` appended, which
/// [`Package::open_embedded`] finds when that copy runs. The program must not carry a package
/// already (a bundle of a bundle is refused). `progress(file, bytes)` is called before each
/// file. Returns the size of `output`.
pub fn write_bundle(
    package: &Package,
    program: &Path,
    output: &Path,
    overwrite: bool,
    progress: impl FnMut(&str, u64),
) -> Result<u64> {
    if embedded_in_executable(program)?.is_some() {
        return Err(bundle_error(
            program,
            "this program already carries a package (a bundle of a bundle): bundle with a plain inferox binary",
        ));
    }
    if let (Ok(a), Ok(b)) = (program.canonicalize(), output.canonicalize())
        && a == b
    {
        return Err(Error::InvalidArgument(format!(
            "{}: the output would replace the program being bundled",
            output.display()
        )));
    }
    check_output(output, overwrite)?;
    let mut source = std::fs::File::open(program).map_err(|e| Error::io(program, e))?;
    let meta = source.metadata().map_err(|e| Error::io(program, e))?;
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        Some(meta.permissions().mode() & 0o7777 | 0o111)
    };
    #[cfg(not(unix))]
    let mode = None;
    let mut total = 0;
    write_atomic_with(output, mode, |file| {
        let mut out = std::io::BufWriter::new(file);
        let (len, sha256) = crate::files::copy_hashed(&mut source, Some(&mut out), |_| {})
            .map_err(|e| Error::io(program, e))?;
        let base = len.next_multiple_of(ALIGN);
        std::io::copy(&mut std::io::repeat(0).take(base - len), &mut out)
            .map_err(|e| Error::write(output, e))?;
        let program = Program { size: len, sha256 };
        total = base + write_payload_after(package, Some(program), &mut out, progress)?;
        out.flush().map_err(|e| Error::write(output, e))
    })?;
    Ok(total)
}

/// Includes a payload file written by [`write_payload_file`] (e.g. into `OUT_DIR` by a build
/// script) as `&'static [u8]` aligned to [`ALIGN`], for [`Package::from_static`]. rustc holds
/// the file in memory while compiling (about 16× its size): keep this for small packages and
/// append large ones with [`write_bundle`].
#[macro_export]
macro_rules! include_package {
    ($path:expr) => {{
        #[repr(C, align(65536))]
        struct Aligned<T: ?Sized>(T);
        static ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!($path));
        &ALIGNED.0
    }};
}
