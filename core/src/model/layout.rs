//! The named layout of a flat parameter vector.

use std::ops::Range;

/// One named tensor inside the flat vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Its name, e.g. `layer0.weight`.
    pub name: String,
    /// Its shape, outermost first (row-major).
    pub shape: Vec<usize>,
    /// Where it starts in the flat vector.
    pub offset: usize,
}

impl TensorSpec {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a tensor with no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its range in the flat vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Tensors laid end to end in one `f32` vector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    tensors: Vec<TensorSpec>,
    len: usize,
}

impl Layout {
    /// Appends a tensor and returns its index.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        let spec = TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
            offset: self.len,
        };
        self.len += spec.len();
        self.tensors.push(spec);
        self.tensors.len() - 1
    }

    /// Total number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the layout holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All tensors in order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// The tensor with this name.
    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The range of tensor `index`.
    pub fn range(&self, index: usize) -> Range<usize> {
        self.tensors[index].range()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tensors_are_laid_end_to_end() {
        let mut l = super::Layout::default();
        assert_eq!(l.push("w", &[3, 2]), 0);
        assert_eq!(l.push("b", &[2]), 1);
        assert_eq!(l.len(), 8);
        assert_eq!(l.range(1), 6..8);
        assert_eq!(l.get("b").unwrap().offset, 6);
        assert!(l.get("c").is_none());
    }
}
