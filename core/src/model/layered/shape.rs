//! The shape of one example between layers.

use std::fmt;

/// One example as a layer sees it: `channels × height × width`, stored
/// channels-last (height, then width, then channel) so that a convolution's
/// patches and its output are rows of a matrix product. A flat vector of `n`
/// features is `n × 1 × 1`, which is the same in either order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Channels (feature maps).
    pub channels: usize,
    /// Rows of each map.
    pub height: usize,
    /// Columns of each map.
    pub width: usize,
}

impl Shape {
    /// A flat vector of `n` features.
    pub fn flat(n: usize) -> Self {
        Self::image(n, 1, 1)
    }

    /// An image of `channels` maps of `height × width`.
    pub fn image(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// Values per example.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True for a shape holding nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for a flat vector (a dense layer's input and output).
    pub fn is_flat(&self) -> bool {
        self.height == 1 && self.width == 1
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_flat() {
            write!(f, "{} features", self.channels)
        } else {
            write!(f, "{}×{}×{}", self.channels, self.height, self.width)
        }
    }
}
