//! Datasets: the IDX file format, MNIST (verify and parse; finding and
//! downloading it is the wire crate's `fetch`) and RDD-like partitions.

pub mod cut;
pub mod dataset;
pub mod idx;
pub mod load;
pub mod md5sum;
pub mod mnist;
mod mnist_files;
pub mod partition;
pub mod spec;

pub use dataset::{Dataset, DatasetError};
pub use idx::{IdxArray, IdxError};
pub use load::DataError;
pub use mnist::{Mnist, MnistError};
pub use partition::{Partition, PartitionError};
