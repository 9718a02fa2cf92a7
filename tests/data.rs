//! Dataset module: IDX parsing of real and corrupted files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use dcgan_wgpu::data::idx::{read_images, read_labels, read_training_set};
use flate2::Compression;
use flate2::write::GzEncoder;
use tempfile::TempDir;

const MNIST_5K: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist-5k");
const IMAGES_GZ: &str = "train-images-idx3-ubyte.gz";
const LABELS_GZ: &str = "train-labels-idx1-ubyte.gz";
const IMAGES_RAW: &str = "train-images-idx3-ubyte";
const LABELS_RAW: &str = "train-labels-idx1-ubyte";

// ---------------------------------------------------------------- helpers

fn mnist_5k(name: &str) -> PathBuf {
    Path::new(MNIST_5K).join(name)
}

fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut bytes = idx_header(0x0803, &[count, rows, cols]);
    let pixels = (count * rows * cols) as usize;
    bytes.extend((0..pixels).map(|index| (index % 256) as u8));
    bytes
}

fn idx_labels(count: u32) -> Vec<u8> {
    let mut bytes = idx_header(0x0801, &[count]);
    bytes.extend((0..count).map(|index| (index % 10) as u8));
    bytes
}

fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for dim in dims {
        bytes.extend(dim.to_be_bytes());
    }
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// The full one-line message of an error, context included.
fn message<T: std::fmt::Debug>(result: anyhow::Result<T>) -> String {
    let message = format!("{:#}", result.unwrap_err());
    assert!(!message.contains('\n'), "not one line: {message}");
    message
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn mnist_5k_has_500_plausible_digits_per_class() {
    let set = read_training_set(&mnist_5k(IMAGES_GZ), &mnist_5k(LABELS_GZ)).unwrap();
    let images = &set.images;
    assert_eq!((images.count, images.rows, images.cols), (5000, 28, 28));
    assert_eq!(images.pixels.len(), 5000 * 28 * 28);
    assert_eq!(set.labels.0.len(), 5000);
    let mut per_class = [0; 10];
    for &label in &set.labels.0 {
        per_class[label as usize] += 1;
    }
    assert_eq!(per_class, [500; 10]);

    let mean = images.pixels.iter().map(|&p| p as f64).sum::<f64>() / images.pixels.len() as f64;
    let zeros = images.pixels.iter().filter(|&&p| p == 0).count() as f64;
    assert!((25.0..45.0).contains(&mean), "mean pixel {mean}");
    assert!((0.7..0.9).contains(&(zeros / images.pixels.len() as f64)));
    assert_eq!(images.pixels.iter().max(), Some(&255));
    // MNIST digits are centred: the border rows are blank.
    assert!(images.image(0)[..28].iter().all(|&p| p == 0));
    assert!(images.image(4999)[27 * 28..].iter().all(|&p| p == 0));
}

#[test]
fn bad_magic_says_what_was_found() {
    let dir = TempDir::new().unwrap();
    let mut bytes = idx_images(1, 28, 28);
    bytes[3] = 0x04;
    let path = write_file(dir.path(), IMAGES_RAW, &bytes);
    let message = message(read_images(&path));
    assert_mentions(
        &message,
        &[
            IMAGES_RAW,
            "neither gzip nor IDX",
            "00 00 08 04",
            "0x00000803",
        ],
    );
}

#[test]
fn html_page_named_gz_is_an_error_showing_its_start() {
    let dir = TempDir::new().unwrap();
    let path = write_file(
        dir.path(),
        IMAGES_GZ,
        b"<!DOCTYPE html><html>Not found</html>",
    );
    let message = message(read_images(&path));
    assert_mentions(
        &message,
        &[IMAGES_GZ, "neither gzip nor IDX", "\"<!DOCTYP\""],
    );
}

#[test]
fn empty_file_is_an_error() {
    let dir = TempDir::new().unwrap();
    let path = write_file(dir.path(), LABELS_RAW, b"");
    assert_mentions(&message(read_labels(&path)), &[LABELS_RAW, "empty"]);
}

#[test]
fn labels_where_images_were_expected() {
    let dir = TempDir::new().unwrap();
    let path = write_file(dir.path(), IMAGES_RAW, &idx_labels(4));
    assert_mentions(&message(read_images(&path)), &["holds labels", "images"]);
}

#[test]
fn truncated_header() {
    let dir = TempDir::new().unwrap();
    let path = write_file(dir.path(), IMAGES_RAW, &idx_images(1, 28, 28)[..10]);
    assert_mentions(&message(read_images(&path)), &["truncated header"]);
}

#[test]
fn truncated_payload() {
    let dir = TempDir::new().unwrap();
    let bytes = idx_images(3, 28, 28);
    let path = write_file(dir.path(), IMAGES_RAW, &bytes[..bytes.len() - 100]);
    let message = message(read_images(&path));
    assert_mentions(
        &message,
        &[
            IMAGES_RAW,
            "truncated",
            "3 images of 28x28 (2352 bytes)",
            "holds 2252",
        ],
    );
}

#[test]
fn trailing_garbage() {
    let dir = TempDir::new().unwrap();
    let mut bytes = idx_labels(5);
    bytes.extend(b"junk");
    let path = write_file(dir.path(), LABELS_RAW, &bytes);
    let message = message(read_labels(&path));
    assert_mentions(
        &message,
        &[LABELS_RAW, "trailing garbage", "5 labels", "4 too many"],
    );
}

#[test]
fn gzip_detected_by_content_not_name() {
    let dir = TempDir::new().unwrap();
    let path = write_file(dir.path(), LABELS_RAW, &gzip(&idx_labels(7)));
    assert_eq!(read_labels(&path).unwrap().0.len(), 7);
}

#[test]
fn truncated_gzip_is_an_error() {
    let dir = TempDir::new().unwrap();
    let compressed = gzip(&idx_images(20, 28, 28));
    let path = write_file(dir.path(), IMAGES_GZ, &compressed[..compressed.len() / 2]);
    assert_mentions(&message(read_images(&path)), &[IMAGES_GZ, "corrupt gzip"]);
}

#[test]
fn gzip_missing_only_its_trailer_is_an_error() {
    let dir = TempDir::new().unwrap();
    let compressed = gzip(&idx_images(20, 28, 28));
    let path = write_file(dir.path(), IMAGES_GZ, &compressed[..compressed.len() - 8]);
    assert_mentions(&message(read_images(&path)), &[IMAGES_GZ, "corrupt gzip"]);
}

#[test]
fn gzip_with_bad_crc_is_an_error() {
    let dir = TempDir::new().unwrap();
    let mut compressed = gzip(&idx_labels(50));
    let crc_index = compressed.len() - 8;
    compressed[crc_index] ^= 0xff;
    let path = write_file(dir.path(), LABELS_GZ, &compressed);
    assert_mentions(&message(read_labels(&path)), &[LABELS_GZ, "corrupt gzip"]);
}

#[test]
fn valid_gzip_of_garbage_is_an_error() {
    let dir = TempDir::new().unwrap();
    let path = write_file(dir.path(), LABELS_GZ, &gzip(b"hello"));
    assert_mentions(
        &message(read_labels(&path)),
        &["valid gzip but not IDX", "\"hello\""],
    );
}
