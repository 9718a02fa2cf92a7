//! IDX files, the format MNIST and Fashion-MNIST ship in.
//!
//! A file is gunzipped when it starts with the gzip magic bytes (1f 8b), whatever its
//! name: a file named `.gz` that holds valid raw IDX is read as is, because browsers
//! and some mirrors decompress on the fly but keep the name. Every error is one line
//! that starts with the file's path.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use flate2::read::MultiGzDecoder;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const MAGIC_LEN: usize = 4;
const DIMENSION_LEN: usize = 4;

/// Grayscale images, one byte per pixel, stored image after image, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    /// The pixels of image `index`, `rows * cols` bytes. Panics if `index >= count`.
    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.rows * self.cols;
        &self.pixels[index * size..(index + 1) * size]
    }
}

/// One class label per image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels(pub Vec<u8>);

/// Images and their labels, as many of one as of the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainingSet {
    pub images: Images,
    pub labels: Labels,
}

/// Reads an IDX image file (magic 0x00000803: unsigned bytes, 3 dimensions).
pub fn read_images(path: &Path) -> Result<Images> {
    let (dims, pixels) = read_idx(path, Kind::Images)?;
    Ok(Images {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Reads an IDX label file (magic 0x00000801: unsigned bytes, 1 dimension).
pub fn read_labels(path: &Path) -> Result<Labels> {
    let (_, labels) = read_idx(path, Kind::Labels)?;
    Ok(Labels(labels))
}

/// Reads an image file and a label file and checks that they hold as many entries.
pub fn read_training_set(images_path: &Path, labels_path: &Path) -> Result<TrainingSet> {
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path)?;
    if images.count != labels.0.len() {
        bail!(
            "{}: holds {} labels but {} holds {} images; the two files must come from the same set",
            labels_path.display(),
            labels.0.len(),
            images_path.display(),
            images.count
        );
    }
    Ok(TrainingSet { images, labels })
}

/// What an IDX file is expected to hold.
#[derive(Clone, Copy)]
enum Kind {
    Images,
    Labels,
}

impl Kind {
    fn magic(self) -> u32 {
        match self {
            Kind::Images => 0x0000_0803,
            Kind::Labels => 0x0000_0801,
        }
    }

    fn dimension_count(self) -> usize {
        match self {
            Kind::Images => 3,
            Kind::Labels => 1,
        }
    }

    fn describe(self, dims: &[usize], bytes: usize) -> String {
        match self {
            Kind::Images => format!(
                "{} images of {}x{} ({bytes} bytes)",
                dims[0], dims[1], dims[2]
            ),
            Kind::Labels => format!("{} labels ({bytes} bytes)", dims[0]),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Images => "images",
            Kind::Labels => "labels",
        })
    }
}

/// File contents, decompressed if they were gzip, with how to name them in errors.
struct Contents {
    bytes: Vec<u8>,
    was_gzip: bool,
}

impl Contents {
    fn noun(&self) -> &'static str {
        if self.was_gzip {
            "the decompressed data"
        } else {
            "the file"
        }
    }
}

/// Reads, gunzips if needed and validates one IDX file; returns its dimensions and payload.
fn read_idx(path: &Path, kind: Kind) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw =
        fs::read(path).map_err(|error| anyhow!("{}: cannot read: {error}", path.display()))?;
    decode(raw, kind).map_err(|problem| anyhow!("{}: {problem:#}", path.display()))
}

fn decode(raw: Vec<u8>, kind: Kind) -> Result<(Vec<usize>, Vec<u8>)> {
    let contents = decompress_if_gzip(raw)?;
    let dims = parse_header(&contents, kind)?;
    let header_len = MAGIC_LEN + DIMENSION_LEN * dims.len();
    check_payload_len(&contents, header_len, &dims, kind)?;
    let mut bytes = contents.bytes;
    bytes.drain(..header_len);
    Ok((dims, bytes))
}

/// The payload must be exactly as long as the dimensions say: no more, no less.
fn check_payload_len(
    contents: &Contents,
    header_len: usize,
    dims: &[usize],
    kind: Kind,
) -> Result<()> {
    let expected = dims
        .iter()
        .try_fold(1usize, |len, &dim| len.checked_mul(dim))
        .ok_or_else(|| anyhow!("header declares impossibly many {kind}: dimensions {dims:?}"))?;
    let actual = contents.bytes.len() - header_len;
    let declared = kind.describe(dims, expected);
    let holder = contents.noun();
    if actual < expected {
        bail!("truncated: header says {declared} but {holder} holds {actual}");
    }
    if actual > expected {
        bail!(
            "trailing garbage: header says {declared} but {holder} holds {actual} ({} too many)",
            actual - expected
        );
    }
    Ok(())
}

fn decompress_if_gzip(raw: Vec<u8>) -> Result<Contents> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(Contents {
            bytes: raw,
            was_gzip: false,
        });
    }
    let mut bytes = Vec::new();
    MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut bytes)
        .map_err(|error| anyhow!("corrupt gzip data ({error})"))?;
    Ok(Contents {
        bytes,
        was_gzip: true,
    })
}

/// Checks the magic number and returns the dimensions the header declares.
fn parse_header(contents: &Contents, kind: Kind) -> Result<Vec<usize>> {
    let bytes = &contents.bytes;
    let Some(magic) = read_u32(bytes, 0) else {
        bail!("{}", not_idx(contents, kind));
    };
    if magic != kind.magic() {
        let other = match kind {
            Kind::Images => Kind::Labels,
            Kind::Labels => Kind::Images,
        };
        if magic == other.magic() {
            bail!(
                "holds {other} (IDX magic {magic:#010x}) where {kind} (magic {:#010x}) were expected",
                kind.magic()
            );
        }
        bail!("{}", not_idx(contents, kind));
    }
    (0..kind.dimension_count())
        .map(|index| {
            let dim = read_u32(bytes, MAGIC_LEN + DIMENSION_LEN * index).ok_or_else(|| {
                anyhow!(
                    "truncated header: {} holds {} bytes, too few for {} dimensions",
                    contents.noun(),
                    bytes.len(),
                    kind.dimension_count()
                )
            })?;
            Ok(dim as usize)
        })
        .collect()
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let word = bytes.get(offset..offset + 4)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

/// Says what the file starts with, since a wrong file is often an HTML error page.
fn not_idx(contents: &Contents, kind: Kind) -> String {
    let bytes = &contents.bytes;
    let expected = format!("IDX {kind} (magic {:#010x})", kind.magic());
    if bytes.is_empty() {
        return format!("{} is empty, expected {expected}", contents.noun());
    }
    let start = &bytes[..bytes.len().min(8)];
    let hex: Vec<String> = start.iter().map(|byte| format!("{byte:02x}")).collect();
    let text: String = start
        .iter()
        .map(|&byte| match byte {
            b' '..=b'~' => byte as char,
            _ => '.',
        })
        .collect();
    let found = if contents.was_gzip {
        "valid gzip but not IDX"
    } else {
        "neither gzip nor IDX"
    };
    format!(
        "{found}: {} starts with {} (\"{text}\"), expected {expected}",
        contents.noun(),
        hex.join(" ")
    )
}
