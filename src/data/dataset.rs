//! The datasets the trainer knows: where their files live locally and where to download them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Result, anyhow, bail};

use super::download::{RemoteFile, download};
use super::idx::{self, TrainingSet};

const IMAGES_FILE: &str = "train-images-idx3-ubyte";
const LABELS_FILE: &str = "train-labels-idx1-ubyte";
/// Side of every image of the supported datasets.
pub const IMAGE_SIDE: usize = 28;
const CLASS_COUNT: u8 = 10;
const REDOWNLOAD_ADVICE: &str =
    "delete the bad file and rerun to download a fresh copy, or replace it by hand";

/// A 28x28 grayscale dataset with ten classes, in the MNIST file layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Dataset {
    Mnist,
    FashionMnist,
}

impl Dataset {
    /// The name used on the command line and as the dataset's folder under the data directory.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
        }
    }

    /// The public mirrors and the published MD5 sums of the gzip training files.
    pub fn official_source(self) -> Source {
        let (mirrors, images_md5, labels_md5): (&[&str], _, _) = match self {
            Dataset::Mnist => (
                &[
                    "https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/",
                    "http://yann.lecun.com/exdb/mnist/",
                ],
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
            ),
            Dataset::FashionMnist => (
                &[
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
                ],
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
            ),
        };
        Source {
            mirrors: mirrors.iter().map(|mirror| mirror.to_string()).collect(),
            images_md5: images_md5.to_owned(),
            labels_md5: labels_md5.to_owned(),
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        [Dataset::Mnist, Dataset::FashionMnist]
            .into_iter()
            .find(|dataset| dataset.name() == name)
            .ok_or_else(|| anyhow!("unknown dataset {name:?}; expected mnist or fashion-mnist"))
    }
}

/// Where to download `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz` from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Base URLs, tried in order; the file name is appended to each.
    pub mirrors: Vec<String>,
    pub images_md5: String,
    pub labels_md5: String,
}

/// What to do when the training files are not in the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadPolicy {
    /// Never touch the network: missing files are an error.
    Never,
    /// Download from the dataset's public mirrors.
    Official,
    /// Download from these mirrors instead (a private mirror, or a test server).
    From(Source),
}

impl DownloadPolicy {
    fn source(&self, dataset: Dataset) -> Option<Source> {
        match self {
            DownloadPolicy::Never => None,
            DownloadPolicy::Official => Some(dataset.official_source()),
            DownloadPolicy::From(source) => Some(source.clone()),
        }
    }
}

/// Loads the training images and labels of `dataset`, downloading missing files if allowed.
///
/// Each file is looked for as `X.gz` or raw `X`, first in `data_dir/<dataset name>/`,
/// then in `data_dir` itself. Missing files are downloaded into `data_dir/<dataset name>/`,
/// so that MNIST and Fashion-MNIST, whose files share names, never overwrite each other.
pub fn load_training_set(
    dataset: Dataset,
    data_dir: &Path,
    download_policy: &DownloadPolicy,
) -> Result<TrainingSet> {
    let dataset_dir = data_dir.join(dataset.name());
    let images_path = find_local(data_dir, &dataset_dir, IMAGES_FILE);
    let labels_path = find_local(data_dir, &dataset_dir, LABELS_FILE);
    let (images_path, labels_path) = match (images_path, labels_path) {
        (Some(images), Some(labels)) => (images, labels),
        (images, labels) => {
            let Some(source) = download_policy.source(dataset) else {
                bail!("{}", offline_error(dataset, data_dir, [&images, &labels]));
            };
            let images = fetch_if_missing(
                images,
                IMAGES_FILE,
                &source.images_md5,
                &source,
                &dataset_dir,
            )?;
            let labels = fetch_if_missing(
                labels,
                LABELS_FILE,
                &source.labels_md5,
                &source,
                &dataset_dir,
            )?;
            (images, labels)
        }
    };
    let training_set = idx::read_training_set(&images_path, &labels_path)
        .map_err(|error| anyhow!("{error:#}; {REDOWNLOAD_ADVICE}"))?;
    check_fits_dataset(dataset, &training_set, &images_path, &labels_path)?;
    Ok(training_set)
}

fn find_local(data_dir: &Path, dataset_dir: &Path, base_name: &str) -> Option<PathBuf> {
    let gzip_name = format!("{base_name}.gz");
    [dataset_dir, data_dir]
        .into_iter()
        .flat_map(|dir| [dir.join(&gzip_name), dir.join(base_name)])
        .find(|path| path.is_file())
}

fn fetch_if_missing(
    found: Option<PathBuf>,
    base_name: &str,
    md5: &str,
    source: &Source,
    dataset_dir: &Path,
) -> Result<PathBuf> {
    if let Some(path) = found {
        return Ok(path);
    }
    let file = RemoteFile {
        name: format!("{base_name}.gz"),
        md5: md5.to_owned(),
    };
    download(&file, &source.mirrors, dataset_dir)
}

fn offline_error(dataset: Dataset, data_dir: &Path, found: [&Option<PathBuf>; 2]) -> String {
    let missing: Vec<String> = [IMAGES_FILE, LABELS_FILE]
        .into_iter()
        .zip(found)
        .filter(|(_, path)| path.is_none())
        .map(|(name, _)| format!("{name}(.gz)"))
        .collect();
    format!(
        "{} training data not found: no {} in {} or {}; downloading is off, so allow it or put the files there (or point --data-dir at a folder that holds them)",
        dataset,
        missing.join(" or "),
        data_dir.join(dataset.name()).display(),
        data_dir.display()
    )
}

/// The files parse as IDX; check they also look like this dataset: 28x28, labels 0-9.
fn check_fits_dataset(
    dataset: Dataset,
    training_set: &TrainingSet,
    images_path: &Path,
    labels_path: &Path,
) -> Result<()> {
    let images = &training_set.images;
    // BatchNorm needs two images in a batch.
    if images.count < 2 {
        bail!(
            "{}: holds {} images, too few to train on (at least 2): {REDOWNLOAD_ADVICE}",
            images_path.display(),
            images.count
        );
    }
    if (images.rows, images.cols) != (IMAGE_SIDE, IMAGE_SIDE) {
        bail!(
            "{}: images are {}x{} but {dataset} images are {IMAGE_SIDE}x{IMAGE_SIDE}; this is not the {dataset} training set: {REDOWNLOAD_ADVICE}",
            images_path.display(),
            images.rows,
            images.cols
        );
    }
    if let Some((index, label)) = training_set
        .labels
        .0
        .iter()
        .enumerate()
        .find(|&(_, &label)| label >= CLASS_COUNT)
    {
        bail!(
            "{}: label {index} is {label} but {dataset} labels are 0 to {}: {REDOWNLOAD_ADVICE}",
            labels_path.display(),
            CLASS_COUNT - 1
        );
    }
    Ok(())
}
