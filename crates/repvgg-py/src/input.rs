//! numpy arrays in and out: the batch `[N, C, H, W]`, the images of `classify`, the outputs.
//!
//! Arrays cross as flat C-ordered buffers plus a shape: rust-numpy speaks a newer `ndarray` than
//! the engines, and a C-contiguous buffer is all either side needs.

use std::path::PathBuf;

use image::RgbImage;
use ndarray::{ArrayView4, Dimension};
use numpy::{
    PyArray, PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::errors::{InputError, InputTypeError};

/// A C-contiguous array of `T` that Python owns: the caller's own array when it already was
/// one (zero-copy), else the copy `numpy.ascontiguousarray` made.
pub(crate) struct Contiguous<'py, T: numpy::Element> {
    array: PyReadonlyArrayDyn<'py, T>,
    shape: Vec<usize>,
}

impl<T: numpy::Element> Contiguous<'_, T> {
    pub(crate) fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub(crate) fn data(&self) -> &[T] {
        // `Contiguous` is only built from C-contiguous arrays (checked in `contiguous`), for
        // which `as_slice` cannot fail; an empty slice would be refused by the shape checks.
        self.array.as_slice().unwrap_or(&[])
    }
}

/// "dtype float64 and shape (2, 3, 8, 8)", the way numpy writes them.
fn describe(arr: &Bound<'_, PyUntypedArray>) -> String {
    let dims: Vec<String> = arr.shape().iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    format!("dtype {} and shape {shape}", arr.dtype())
}

fn type_name(x: &Bound<'_, PyAny>) -> String {
    x.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown type".into())
}

/// `arr` as a C-contiguous `T` array: borrowed when it is one, else converted by numpy
/// (`ascontiguousarray`, which also handles negative strides and byte order).
fn contiguous<'py, T: numpy::Element>(
    arr: &Bound<'py, PyUntypedArray>,
    arg: &str,
) -> PyResult<Contiguous<'py, T>> {
    let py = arr.py();
    let borrowed = match arr.cast::<PyArrayDyn<T>>() {
        Ok(a) if arr.is_c_contiguous() => a.clone(),
        _ => {
            let np = py.import("numpy")?;
            let dtype = numpy::dtype::<T>(py);
            np.call_method1("ascontiguousarray", (arr, dtype))?
                .cast_into::<PyArrayDyn<T>>()
                .map_err(|e| {
                    InputTypeError::new_err(format!("{arg}: cannot convert the array ({e})"))
                })?
        }
    };
    let array = borrowed
        .try_readonly()
        .map_err(|e| InputError::new_err(format!("{arg}: cannot borrow the array ({e})")))?;
    if array.as_slice().is_err() {
        return Err(InputError::new_err(format!(
            "{arg}: numpy did not make the array contiguous"
        )));
    }
    let shape = array.shape().to_vec();
    Ok(Contiguous { array, shape })
}

/// `x` as a float32 `[N, C, H, W]` batch. A C-contiguous native float32 array is read in
/// place; other strides (negative ones included), byte orders and float64 are copied into a
/// C-ordered float32 array. Any other type raises `InputTypeError` (a `TypeError`), another
/// rank `InputError` (a `ValueError`), naming `arg`, the dtype and the shape.
pub(crate) fn batch<'py>(x: &Bound<'py, PyAny>, arg: &str) -> PyResult<Contiguous<'py, f32>> {
    let Ok(arr) = x.cast::<PyUntypedArray>() else {
        return Err(InputTypeError::new_err(format!(
            "{arg}: expected a numpy.ndarray of float32 [N, C, H, W], found {}",
            type_name(x)
        )));
    };
    let dtype = arr.dtype();
    // float32 or float64, in either byte order.
    if !(dtype.kind() == b'f' && matches!(dtype.itemsize(), 4 | 8)) {
        return Err(InputTypeError::new_err(format!(
            "{arg}: expected float32 (float64 is converted), found {}",
            describe(arr)
        )));
    }
    if arr.ndim() != 4 {
        return Err(InputError::new_err(format!(
            "{arg}: expected a 4-D array [N, C, H, W], found {}",
            describe(arr)
        )));
    }
    contiguous::<f32>(arr, arg)
}

impl Contiguous<'_, f32> {
    /// The batch as the engines' `[N, C, H, W]` view.
    pub(crate) fn view(&self) -> PyResult<ArrayView4<'_, f32>> {
        let s = self.shape();
        ArrayView4::from_shape((s[0], s[1], s[2], s[3]), self.data())
            .map_err(|e| InputError::new_err(format!("x: shape {s:?}: {e}")))
    }
}

/// A float32 array of the engines as a numpy array of the same shape (the data moves, C order).
pub(crate) fn to_numpy<'py, D: Dimension>(
    py: Python<'py>,
    a: ndarray::Array<f32, D>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let shape = a.shape().to_vec();
    let data = if a.is_standard_layout() {
        let (v, offset) = a.into_raw_vec_and_offset();
        match offset {
            Some(0) | None => v,
            Some(o) => v[o..].to_vec(),
        }
    } else {
        a.iter().copied().collect()
    };
    let flat: Bound<'py, PyArray1<f32>> = PyArray::from_vec(py, data);
    flat.reshape(shape)
}

/// One image for `classify`: a file to decode, or pixels already in memory.
pub(crate) enum ImageSource {
    Path(PathBuf),
    Pixels(RgbImage),
}

const WANT: &str = "a list of image paths or uint8 [H, W, 3] arrays, or a uint8 [N, H, W, 3] array";

fn uint8_images(
    arr: &Bound<'_, PyUntypedArray>,
    name: &str,
    rank: usize,
) -> PyResult<Vec<RgbImage>> {
    let py = arr.py();
    let shape_want = if rank == 4 {
        "[N, H, W, 3]"
    } else {
        "[H, W, 3]"
    };
    if !arr.dtype().is_equiv_to(&numpy::dtype::<u8>(py)) {
        return Err(InputTypeError::new_err(format!(
            "{name}: expected a uint8 {shape_want} array, found {}",
            describe(arr)
        )));
    }
    let s = arr.shape().to_vec();
    let (n, h, w, c) = match (rank, s.as_slice()) {
        (4, &[n, h, w, c]) => (n, h, w, c),
        (3, &[h, w, c]) => (1, h, w, c),
        _ => (0, 0, 0, 0),
    };
    if c != 3 || h == 0 || w == 0 || s.len() != rank {
        return Err(InputError::new_err(format!(
            "{name}: expected a uint8 {shape_want} RGB array with H, W >= 1, found {}",
            describe(arr)
        )));
    }
    let too_big = || InputError::new_err(format!("{name}: an image of {w}x{h} is too large"));
    let (w32, h32) = (
        u32::try_from(w).map_err(|_| too_big())?,
        u32::try_from(h).map_err(|_| too_big())?,
    );
    let pixels = contiguous::<u8>(arr, name)?;
    let per_image = h * w * 3;
    pixels
        .data()
        .chunks_exact(per_image)
        .take(n)
        .map(|img| RgbImage::from_raw(w32, h32, img.to_vec()).ok_or_else(too_big))
        .collect()
}

/// `images` of `Runner.classify`: a list or tuple of paths (`str` / `os.PathLike`) and uint8
/// `[H, W, 3]` arrays, or one uint8 `[N, H, W, 3]` array.
pub(crate) fn images(images: &Bound<'_, PyAny>) -> PyResult<Vec<ImageSource>> {
    if let Ok(arr) = images.cast::<PyUntypedArray>() {
        if arr.ndim() != 4 {
            return Err(InputError::new_err(format!(
                "images: expected {WANT}, found an array of {}",
                describe(arr)
            )));
        }
        return Ok(uint8_images(arr, "images", 4)?
            .into_iter()
            .map(ImageSource::Pixels)
            .collect());
    }
    if images.is_instance_of::<PyString>()
        || !(images.is_instance_of::<PyList>() || images.is_instance_of::<PyTuple>())
    {
        return Err(InputTypeError::new_err(format!(
            "images: expected {WANT}, found {}",
            type_name(images)
        )));
    }
    let mut out = Vec::new();
    for (i, item) in images.try_iter()?.enumerate() {
        let item = item?;
        let name = format!("images[{i}]");
        if let Ok(arr) = item.cast::<PyUntypedArray>() {
            out.extend(
                uint8_images(arr, &name, 3)?
                    .into_iter()
                    .map(ImageSource::Pixels),
            );
        } else if let Ok(path) = item.extract::<PathBuf>() {
            out.push(ImageSource::Path(path));
        } else {
            return Err(InputTypeError::new_err(format!(
                "{name}: expected a path (str or os.PathLike) or a uint8 [H, W, 3] array, found {}",
                type_name(&item)
            )));
        }
    }
    Ok(out)
}
