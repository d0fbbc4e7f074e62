//! Datasets: the IDX file format, MNIST (find, fetch, verify) and RDD-like
//! partitions.

pub mod cut;
pub mod dataset;
pub mod fetch;
pub mod idx;
pub mod load;
pub mod md5sum;
pub mod mnist;
mod mnist_files;
pub mod partition;
pub mod spec;

pub use dataset::{Dataset, DatasetError};
pub use fetch::{FetchError, FetchOptions};
pub use idx::{IdxArray, IdxError};
pub use load::DataError;
pub use mnist::{Mnist, MnistError};
pub use partition::{Partition, PartitionError};
