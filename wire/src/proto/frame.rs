//! One frame's payload: an explicit header and a bulk part.
//!
//! ```text
//! [u32 LE: header length H][H bytes: postcard header][0-3 zero bytes][rest: bulk bytes]
//! ```
//!
//! The zero bytes put the bulk part at a multiple of 4 bytes from the start
//! of the payload: a reader that receives a large frame into a buffer of
//! its own then finds the tensor aligned for `f32` and reads it in place
//! instead of copying it (see `Tensor::as_f32`).
//!
//! The header is the message with its bulk field (if its kind has one, see
//! [`Wire::set_bulk`]) left empty; the bulk part is that field's raw bytes
//! (tensors as little-endian `f32`). Decoding checks that the header length
//! fits the frame, that the header decodes to exactly its bytes, and that
//! bulk bytes come only with a kind that has a bulk field.

use bytes::Bytes;

use super::ProtoError;
use super::messages::Wire;

const HEADER_LEN: usize = 4;

/// The zero bytes after a header of `len` bytes.
fn padding(len: usize) -> usize {
    (4 - (HEADER_LEN + len) % 4) % 4
}

/// Encodes a message as one frame's payload, into a buffer sized up front
/// (a growing buffer would copy a large tensor several times over).
pub fn encode<M: Wire>(msg: &M) -> Result<Bytes, ProtoError> {
    // The bulk field is skipped by serde, so the message itself is the header.
    assemble(msg, &[msg.bulk().unwrap_or_default()])
}

/// Encodes a message whose bulk field is empty as if that field held
/// `values`, copying the values once instead of building the tensor and
/// then copying it into the frame.
pub fn encode_with_tensor<M: Wire>(msg: &M, values: &[f32]) -> Result<Bytes, ProtoError> {
    encode_with_bulk(msg, tensor_bytes(values).as_ref())
}

/// Encodes a message whose bulk field is empty with `bulk` as that field.
pub fn encode_with_bulk<M: Wire>(msg: &M, bulk: &[u8]) -> Result<Bytes, ProtoError> {
    encode_with_bulk_parts(msg, &[bulk])
}

/// [`encode_with_bulk`] with the bulk field given as consecutive parts (a
/// sharded server's slices of the parameters), copied once into the frame.
pub fn encode_with_bulk_parts<M: Wire>(msg: &M, parts: &[&[u8]]) -> Result<Bytes, ProtoError> {
    match msg.bulk() {
        Some([]) => assemble(msg, parts),
        Some(_) => Err(ProtoError::Encode(format!(
            "{} already holds its bulk field",
            msg.kind()
        ))),
        None => Err(ProtoError::Encode(format!("{} has no bulk field", msg.kind()))),
    }
}

fn assemble<M: Wire>(header: &M, bulk: &[&[u8]]) -> Result<Bytes, ProtoError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 256 + bulk.iter().map(|b| b.len()).sum::<usize>());
    out.extend_from_slice(&[0; HEADER_LEN]);
    let mut out = postcard::to_extend(header, out).map_err(|e| ProtoError::Encode(e.to_string()))?;
    let len = u32::try_from(out.len() - HEADER_LEN)
        .map_err(|_| ProtoError::Encode(format!("a {} header over 4 GiB", header.kind())))?;
    out[..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    out.resize(out.len() + padding(len as usize), 0);
    for part in bulk {
        out.extend_from_slice(part);
    }
    Ok(Bytes::from(out))
}

/// Decodes one frame's payload as a message of type `M`. Its bulk field,
/// if any, keeps a view of `frame`.
pub fn decode<M: Wire>(frame: Bytes) -> Result<M, ProtoError> {
    let bad = |reason: String| ProtoError::Decode {
        len: frame.len(),
        reason,
    };
    let (len, rest) = frame
        .split_first_chunk::<HEADER_LEN>()
        .ok_or_else(|| bad("shorter than a frame header".into()))?;
    let len = u32::from_le_bytes(*len) as usize;
    let padded = len + padding(len);
    if padded > rest.len() {
        return Err(bad(format!("header of {len} bytes in {} bytes", rest.len())));
    }
    let (header, bulk) = rest.split_at(len);
    let bulk = frame.slice_ref(&bulk[padded - len..]);
    let (mut msg, left) = postcard::take_from_bytes::<M>(header).map_err(|e| bad(e.to_string()))?;
    if !left.is_empty() {
        return Err(bad(format!(
            "{} bytes left over in a {} header",
            left.len(),
            msg.kind()
        )));
    }
    let bulk_len = bulk.len();
    if bulk_len > 0 && !msg.set_bulk(bulk) {
        return Err(bad(format!(
            "{bulk_len} bulk bytes after a {}, which carries none",
            msg.kind()
        )));
    }
    Ok(msg)
}

/// The wire bytes of `values`: borrowed on a little-endian machine.
fn tensor_bytes(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}
