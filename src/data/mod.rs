//! Datasets: IDX files (raw or gzip), lookup and download.
