//! MNIST's four files: their names and checksums.

/// One of the four MNIST files, with the MD5 of its uncompressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistFile {
    /// The standard file name, without `.gz`.
    pub name: &'static str,
    /// MD5 of the uncompressed file, as published.
    pub md5: &'static str,
}

/// The four files in the order train images, train labels, test images, test labels.
pub const FILES: [MnistFile; 4] = [
    MnistFile {
        name: "train-images-idx3-ubyte",
        md5: "6bbc9ace898e44ae57da46a324031adb",
    },
    MnistFile {
        name: "train-labels-idx1-ubyte",
        md5: "a25bea736e30d166cdddb491f175f624",
    },
    MnistFile {
        name: "t10k-images-idx3-ubyte",
        md5: "2646ac647ad5339dbf082846283269ea",
    },
    MnistFile {
        name: "t10k-labels-idx1-ubyte",
        md5: "27ae3e4e09519cfbb04c329615203637",
    },
];
