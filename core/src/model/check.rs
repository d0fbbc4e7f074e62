//! Checks of a model's inputs that every model and the engine make.

use ndarray::ArrayView2;

use super::{Layout, ModelError};

/// The parameter vector has the layout's length.
pub(crate) fn check_params(layout: &Layout, params: &[f32]) -> Result<(), ModelError> {
    if params.len() != layout.len() {
        return Err(ModelError::ParamLength {
            expected: layout.len(),
            actual: params.len(),
        });
    }
    Ok(())
}

/// Every row has the model's input width.
pub(crate) fn check_width(expected: usize, x: ArrayView2<'_, f32>) -> Result<(), ModelError> {
    if x.ncols() != expected {
        return Err(ModelError::InputDim {
            expected,
            actual: x.ncols(),
        });
    }
    Ok(())
}

/// Every label names one of the model's classes.
pub(crate) fn check_labels(y: &[u8], classes: usize) -> Result<(), ModelError> {
    match y.iter().find(|&&l| usize::from(l) >= classes) {
        Some(&label) => Err(ModelError::LabelOutOfRange { label, classes }),
        None => Ok(()),
    }
}
