//! Dataset module: IDX parsing of real and corrupted files, local lookup, and downloads
//! from a local HTTP server (no real network).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;

use dcgan_wgpu::data::download::{RemoteFile, download};
use dcgan_wgpu::data::idx::{read_images, read_labels, read_training_set};
use dcgan_wgpu::data::{Dataset, DownloadPolicy, Source, load_training_set};
use flate2::Compression;
use flate2::write::GzEncoder;
use md5::{Digest, Md5};
use tempfile::TempDir;

const MNIST_5K: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mnist-5k");
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

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
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

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------- test server

/// What the test server does for one path; unknown paths get 404.
#[derive(Clone)]
enum Reply {
    Serve(Vec<u8>),
    /// Declares `declared` bytes, sends `bytes`, then closes the connection.
    CloseEarly {
        declared: usize,
        bytes: Vec<u8>,
    },
}

/// Serves `routes` on 127.0.0.1 from a background thread; returns the base URL.
fn serve(routes: HashMap<String, Reply>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming() {
            handle(stream.unwrap(), &routes);
        }
    });
    base
}

fn handle(mut stream: TcpStream, routes: &HashMap<String, Reply>) {
    let path = read_request_path(&mut stream);
    let response = match routes.get(&path) {
        Some(Reply::Serve(bytes)) => [http_head(200, bytes.len()), bytes.clone()].concat(),
        Some(Reply::CloseEarly { declared, bytes }) => {
            [http_head(200, *declared), bytes.clone()].concat()
        }
        None => http_head(404, 0),
    };
    let _ = stream.write_all(&response);
}

fn read_request_path(stream: &mut TcpStream) -> String {
    let mut request = Vec::new();
    let mut buffer = [0; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let request = String::from_utf8_lossy(&request);
    request
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

fn http_head(status: u16, content_length: usize) -> Vec<u8> {
    format!("HTTP/1.1 {status} X\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// A URL on which nothing listens, so connecting is refused.
fn refusing_mirror() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/", listener.local_addr().unwrap())
}

fn route(name: &str, reply: Reply) -> HashMap<String, Reply> {
    HashMap::from([(format!("/{name}"), reply)])
}

// ---------------------------------------------------------------- real files

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
fn loads_from_data_dir_without_download() {
    let set =
        load_training_set(Dataset::Mnist, Path::new(MNIST_5K), &DownloadPolicy::Never).unwrap();
    assert_eq!(set.images.count, 5000);
}

#[test]
fn loads_raw_files_from_dataset_subfolder() {
    let dir = TempDir::new().unwrap();
    let subdir = dir.path().join("fashion-mnist");
    fs::create_dir(&subdir).unwrap();
    write_file(&subdir, IMAGES_RAW, &idx_images(3, 28, 28));
    write_file(&subdir, LABELS_RAW, &idx_labels(3));
    let set = load_training_set(Dataset::FashionMnist, dir.path(), &DownloadPolicy::Never).unwrap();
    assert_eq!(set.images.count, 3);
    assert_eq!(set.labels.0, [0, 1, 2]);
    assert_eq!(
        set.images.image(1),
        &idx_images(3, 28, 28)[16 + 784..16 + 2 * 784]
    );
}

// ---------------------------------------------------------------- corrupted files

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
fn label_count_must_match_image_count() {
    let dir = TempDir::new().unwrap();
    write_file(dir.path(), IMAGES_RAW, &idx_images(3, 28, 28));
    write_file(dir.path(), LABELS_RAW, &idx_labels(2));
    let message = message(load_training_set(
        Dataset::Mnist,
        dir.path(),
        &DownloadPolicy::Never,
    ));
    assert_mentions(&message, &[LABELS_RAW, "holds 2 labels", "holds 3 images"]);
}

#[test]
fn raw_idx_named_gz_is_fine() {
    let dir = TempDir::new().unwrap();
    write_file(dir.path(), IMAGES_GZ, &idx_images(2, 28, 28));
    write_file(dir.path(), LABELS_GZ, &idx_labels(2));
    let set = load_training_set(Dataset::Mnist, dir.path(), &DownloadPolicy::Never).unwrap();
    assert_eq!(set.images.count, 2);
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

#[test]
fn wrong_image_size_for_dataset() {
    let dir = TempDir::new().unwrap();
    write_file(dir.path(), IMAGES_GZ, &gzip(&idx_images(2, 32, 32)));
    write_file(dir.path(), LABELS_GZ, &gzip(&idx_labels(2)));
    let message = message(load_training_set(
        Dataset::Mnist,
        dir.path(),
        &DownloadPolicy::Never,
    ));
    assert_mentions(&message, &[IMAGES_GZ, "32x32", "28x28", "mnist"]);
}

#[test]
fn too_few_images_to_train_on() {
    for count in [0, 1] {
        let dir = TempDir::new().unwrap();
        write_file(dir.path(), IMAGES_GZ, &gzip(&idx_images(count, 28, 28)));
        write_file(dir.path(), LABELS_GZ, &gzip(&idx_labels(count)));
        let message = message(load_training_set(
            Dataset::Mnist,
            dir.path(),
            &DownloadPolicy::Never,
        ));
        assert_mentions(
            &message,
            &[IMAGES_GZ, &format!("holds {count} images"), "at least 2"],
        );
    }
}

#[test]
fn label_out_of_range_for_dataset() {
    let dir = TempDir::new().unwrap();
    let mut labels = idx_labels(2);
    labels[9] = 12;
    write_file(dir.path(), IMAGES_RAW, &idx_images(2, 28, 28));
    write_file(dir.path(), LABELS_RAW, &labels);
    let message = message(load_training_set(
        Dataset::Mnist,
        dir.path(),
        &DownloadPolicy::Never,
    ));
    assert_mentions(&message, &[LABELS_RAW, "label 1 is 12", "0 to 9"]);
}

#[test]
fn offline_without_files_names_what_is_missing_and_where() {
    let dir = TempDir::new().unwrap();
    write_file(dir.path(), IMAGES_GZ, &gzip(&idx_images(1, 28, 28)));
    let message = message(load_training_set(
        Dataset::FashionMnist,
        dir.path(),
        &DownloadPolicy::Never,
    ));
    assert_mentions(
        &message,
        &[
            "fashion-mnist",
            "train-labels-idx1-ubyte(.gz)",
            &dir.path().display().to_string(),
            "--data-dir",
        ],
    );
    assert!(
        !message.contains(IMAGES_RAW),
        "images are present: {message}"
    );
}

#[test]
fn dataset_names_round_trip() {
    for dataset in [Dataset::Mnist, Dataset::FashionMnist] {
        assert_eq!(dataset.to_string().parse::<Dataset>().unwrap(), dataset);
    }
    assert_eq!(
        "fashion-mnist".parse::<Dataset>().unwrap(),
        Dataset::FashionMnist
    );
    assert_mentions(
        &message("cifar".parse::<Dataset>()),
        &["cifar", "mnist", "fashion-mnist"],
    );
}

// ---------------------------------------------------------------- downloads

fn remote(name: &str, bytes: &[u8]) -> RemoteFile {
    RemoteFile {
        name: name.to_owned(),
        md5: md5_hex(bytes),
    }
}

#[test]
fn downloads_a_good_file() {
    let bytes = gzip(&idx_labels(100));
    let mirror = serve(route(LABELS_GZ, Reply::Serve(bytes.clone())));
    let dir = TempDir::new().unwrap();
    let dest = download(&remote(LABELS_GZ, &bytes), &[mirror], dir.path()).unwrap();
    assert_eq!(dest, dir.path().join(LABELS_GZ));
    assert_eq!(fs::read(&dest).unwrap(), bytes);
    assert_eq!(dir_entries(dir.path()), [LABELS_GZ]);
}

#[test]
fn wrong_md5_leaves_nothing_behind() {
    let mirror = serve(route(
        LABELS_GZ,
        Reply::Serve(b"not what was expected".to_vec()),
    ));
    let dir = TempDir::new().unwrap();
    let file = remote(LABELS_GZ, b"the real file");
    let message = message(download(&file, &[mirror], dir.path()));
    assert_mentions(&message, &[LABELS_GZ, "MD5 mismatch", &file.md5]);
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn connection_closed_mid_body_leaves_nothing_behind() {
    let reply = Reply::CloseEarly {
        declared: 1000,
        bytes: vec![7; 10],
    };
    let mirror = serve(route(LABELS_GZ, reply));
    let dir = TempDir::new().unwrap();
    let message = message(download(
        &remote(LABELS_GZ, &[7; 1000]),
        &[mirror],
        dir.path(),
    ));
    assert_mentions(&message, &[LABELS_GZ, "every mirror failed"]);
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn falls_back_to_the_next_mirror() {
    let bytes = gzip(&idx_labels(10));
    let refused = refusing_mirror();
    let not_found = serve(HashMap::new());
    let good = serve(route(LABELS_GZ, Reply::Serve(bytes.clone())));
    let dir = TempDir::new().unwrap();
    let dest = download(
        &remote(LABELS_GZ, &bytes),
        &[refused, not_found, good],
        dir.path(),
    )
    .unwrap();
    assert_eq!(fs::read(dest).unwrap(), bytes);
    assert_eq!(dir_entries(dir.path()), [LABELS_GZ]);
}

#[test]
fn all_mirrors_down_lists_each_failure() {
    let refused = refusing_mirror();
    let not_found = serve(HashMap::new());
    let dir = TempDir::new().unwrap();
    let mirrors = [refused.clone(), not_found.clone()];
    let message = message(download(&remote(IMAGES_GZ, b"x"), &mirrors, dir.path()));
    assert_mentions(
        &message,
        &[
            &format!("{refused}{IMAGES_GZ}"),
            &format!("{not_found}{IMAGES_GZ}"),
            "404",
            "by hand",
            &dir.path().display().to_string(),
            "--data-dir",
        ],
    );
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn load_training_set_downloads_missing_files_then_finds_them() {
    let images = fs::read(mnist_5k(IMAGES_GZ)).unwrap();
    let labels = fs::read(mnist_5k(LABELS_GZ)).unwrap();
    let mut routes = route(IMAGES_GZ, Reply::Serve(images.clone()));
    routes.extend(route(LABELS_GZ, Reply::Serve(labels.clone())));
    let source = Source {
        mirrors: vec![refusing_mirror(), serve(routes)],
        images_md5: md5_hex(&images),
        labels_md5: md5_hex(&labels),
    };
    let dir = TempDir::new().unwrap();

    let set = load_training_set(Dataset::Mnist, dir.path(), &DownloadPolicy::From(source)).unwrap();
    assert_eq!((set.images.count, set.labels.0.len()), (5000, 5000));
    assert_eq!(
        dir_entries(&dir.path().join("mnist")),
        [IMAGES_GZ, LABELS_GZ]
    );

    let again = load_training_set(Dataset::Mnist, dir.path(), &DownloadPolicy::Never).unwrap();
    assert_eq!(again, set);
}

#[test]
fn load_training_set_downloads_only_the_missing_file() {
    let labels = gzip(&idx_labels(4));
    let source = Source {
        mirrors: vec![serve(route(LABELS_GZ, Reply::Serve(labels.clone())))],
        images_md5: "never requested".to_owned(),
        labels_md5: md5_hex(&labels),
    };
    let dir = TempDir::new().unwrap();
    write_file(dir.path(), IMAGES_RAW, &idx_images(4, 28, 28));
    let set = load_training_set(Dataset::Mnist, dir.path(), &DownloadPolicy::From(source)).unwrap();
    assert_eq!(set.labels.0, [0, 1, 2, 3]);
    assert_eq!(dir_entries(&dir.path().join("mnist")), [LABELS_GZ]);
}
