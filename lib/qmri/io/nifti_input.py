"""Reading a client's NIfTI safely: the header is checked before any voxel is read.

An input image comes from a client, so its header may claim anything: a complex or RGB data type
(converting to float32 would silently drop the imaginary part or fail), a shape of 1200^3 in a
115-byte file (reading it would allocate gigabytes), a singular affine, or header extensions that
run past the data. :func:`load_input_volume` refuses all of these with a :class:`ValueError` whose
message names the problem (HTTP 422 in the app), or :class:`InputTooLarge` (a ValueError; HTTP 413)
when the header claims more voxels than allowed, and only then reads the data as float32.
:func:`check_nifti_header` is the header-only size check for files entering the datastore.

Messages never contain a file system path: nibabel's own messages (which often do) are shortened
and stripped of paths before they are passed on.

Limits (all counted from the header, before reading data):

* ``max_voxels``: number of values, i.e. the product of the header's dimensions including the
  channel axis of a 4D image (float32 in memory: 4 bytes each). Default :data:`DEFAULT_MAX_VOXELS`.
* ``max_channels``: largest 4th dimension of a 4D image. Default :data:`MAX_CHANNELS`.
* ``max_bytes`` (:func:`check_nifti_header`): header shape x bytes per value of the stored type.
* :data:`MAX_HEADER_BYTES`: largest offset of the voxel data (header + extensions) in bytes.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np

#: Default limit on the number of voxel values of an input (2^28 = 268 million: 1 GiB as float32,
#: e.g. a 256^3 volume with 16 channels).
DEFAULT_MAX_VOXELS = 2**28
#: Largest number of channels (4th dimension) of a 4D input.
MAX_CHANNELS = 64
#: Largest accepted byte offset of the voxel data (header plus extensions), 16 MiB.
MAX_HEADER_BYTES = 16 * 2**20

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_SIZES = {348: nib.Nifti1Header, 540: nib.Nifti2Header}
_SINGLE_FILE_MAGIC = (b"n+1", b"n+2")
_PAIR_MAGIC = (b"ni1", b"ni2")


class InputTooLarge(ValueError):
    """The header claims more voxels (or bytes) than the limit; the message names the limit and
    the header's shape. A ValueError, so callers that map ValueError to 422 still refuse it; the
    app answers 413."""


class HeaderInfo(NamedTuple):
    """What the header of a NIfTI file claims, read without its voxel data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int  # shape x bytes per stored value


class InputVolume(NamedTuple):
    """A checked input: float32 voxel data (3D, or 4D with channels last) and its voxel -> world
    affine (4 x 4, mm)."""

    data: np.ndarray
    affine: np.ndarray


def _unreadable(reason: str) -> ValueError:
    return ValueError(f"cannot read the input as NIfTI: {reason}")


_PATH_RE = re.compile(r"""(?<![\w.])(?:[A-Za-z]:)?[\\/][^\s'"(),;]*""")


def _short_reason(err: BaseException, path: str | os.PathLike | None) -> str:
    """A short, path-free reason from one of nibabel's (or gzip's, zlib's, numpy's) exceptions."""
    text = str(err)
    if path is not None:
        p = Path(path)
        variants = {str(path), str(p), str(p.absolute()), os.path.realpath(p), str(p.parent), p.name}
        for v in sorted((v for v in variants if len(v) > 1 and v != "."), key=len, reverse=True):
            text = text.replace(v, "the file")
    text = _PATH_RE.sub("<path>", text).strip()
    if isinstance(err, FileNotFoundError):
        text = "the file does not exist"
    elif isinstance(err, EOFError):
        text = f"the file is truncated ({text})" if text else "the file is truncated"
    elif isinstance(err, (gzip.BadGzipFile, zlib.error)):
        text = f"the gzip stream is damaged ({text})"
    if not text:
        text = type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _open_raw(path: Path):
    """A binary file object for ``path``: gzip-decompressing when the file starts with gzip's magic."""
    f = open(path, "rb")
    if f.read(2) == _GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")
    f.seek(0)
    return f


def _skip(f, n: int) -> int:
    """Read and discard ``n`` bytes (in 1 MiB pieces); the number actually skipped."""
    done = 0
    while done < n:
        got = len(f.read(min(n - done, 2**20)))
        if not got:
            break
        done += got
    return done


def _parse_header(f) -> nib.Nifti1Header:
    """The NIfTI-1 or NIfTI-2 header at the start of ``f`` (a single-file NIfTI), with its extension
    chain walked (not stored) to make sure no extension runs past the voxel data."""
    first = f.read(4)
    if len(first) < 4:
        raise _unreadable("the file is empty or truncated before the header")
    sizes = {struct.unpack("<i", first)[0], struct.unpack(">i", first)[0]}
    kinds = [k for s, k in _NIFTI_SIZES.items() if s in sizes]
    if not kinds:
        raise _unreadable("not a NIfTI-1 or NIfTI-2 file (unknown header size)")
    klass = kinds[0]
    size = klass.template_dtype.itemsize
    block = first + f.read(size - 4)
    if len(block) < size:
        raise _unreadable(f"the file is truncated inside the {size}-byte header")
    try:
        hdr = klass(block, check=False)
    except Exception as e:  # nibabel's header parser raises several types for a malformed block
        raise _unreadable(_short_reason(e, None)) from None
    magic = bytes(hdr["magic"]).rstrip(b"\x00")
    if magic in _PAIR_MAGIC:
        raise _unreadable("this is the header of a .hdr/.img pair: send a single-file NIfTI (.nii or .nii.gz)")
    if magic not in _SINGLE_FILE_MAGIC:
        raise _unreadable(f"not a NIfTI file (magic {magic[:8]!r})")
    offset = float(hdr["vox_offset"])
    if not math.isfinite(offset) or offset < 0 or offset > MAX_HEADER_BYTES:
        raise _unreadable(f"the voxel data offset {offset:g} bytes is outside 0..{MAX_HEADER_BYTES} bytes")
    flag = f.read(4)
    if len(flag) == 4 and flag[:1] != b"\x00":
        # nibabel reads each extension whole, trusting its size field: check the chain first
        endian = ">" if hdr.endianness == ">" else "<"
        left = int(offset) - (size + 4)
        while left >= 16:
            head = f.read(8)
            if len(head) < 8:
                raise _unreadable("the file is truncated inside a header extension")
            esize = struct.unpack(endian + "i", head[:4])[0]
            if esize < 16 or esize > left:
                raise _unreadable(f"a header extension claims {esize} bytes where {left} bytes remain before the voxel data")
            if _skip(f, esize - 8) < esize - 8:
                raise _unreadable("the file is truncated inside a header extension")
            left -= esize
    return hdr


def _header_shape_dtype(hdr) -> tuple[tuple[int, ...], np.dtype]:
    try:
        shape = tuple(int(n) for n in hdr.get_data_shape())
        dtype = np.dtype(hdr.get_data_dtype())
    except (nib.spatialimages.HeaderDataError, KeyError, ValueError, TypeError) as e:  # unknown data type code, bad dim
        raise _unreadable(_short_reason(e, None)) from None
    if not shape:
        raise ValueError("the input header has no dimensions (dim[0] = 0)")
    if any(n < 1 for n in shape):
        raise ValueError(f"the input header claims shape {shape}: every dimension must be at least 1")
    return shape, dtype


def _read_header(path: str | os.PathLike) -> nib.Nifti1Header:
    p = Path(path)
    try:
        with _open_raw(p) as f:
            return _parse_header(f)
    except ValueError:
        raise
    except Exception as e:  # missing file, permissions, corrupt gzip stream (OSError, EOFError, zlib.error)
        raise _unreadable(_short_reason(e, path)) from None


def check_nifti_header(path: str | os.PathLike, max_bytes: int) -> HeaderInfo:
    """Header-only size check of a NIfTI file (.nii or .nii.gz), e.g. before it enters the datastore.

    Reads the 348-byte (NIfTI-1) or 540-byte (NIfTI-2) header and walks its extensions; no voxel
    data is read and nothing the size of the image is allocated.

    Args:
        path: the file.
        max_bytes: largest accepted size of the voxel data as stored: the header's shape times the
            bytes per value of its data type (e.g. 4 for float32), in bytes.

    Returns:
        :class:`HeaderInfo` (shape, stored dtype, bytes of voxel data).

    Raises:
        InputTooLarge: the header claims more than ``max_bytes`` bytes of voxel data.
        ValueError: the file is not a readable single-file NIfTI, or a dimension is < 1.
    """
    shape, dtype = _header_shape_dtype(_read_header(path))
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise InputTooLarge(f"the image header claims shape {shape} of {dtype.name} = {nbytes:,} bytes of voxel data, more than the limit of {max_bytes:,} bytes")
    return HeaderInfo(shape, dtype, nbytes)


def check_input_header(hdr, max_voxels: int = DEFAULT_MAX_VOXELS, max_channels: int = MAX_CHANNELS) -> tuple[tuple[int, ...], np.dtype]:
    """Refuse what the header of an input image claims before any data is read.

    Checks: a real numeric data type (complex, RGB and other structured types are refused), 3 or
    4 dimensions, each at least 1, at most ``max_channels`` channels in a 4D image, at most
    ``max_voxels`` values in all, and positive finite spatial voxel sizes (pixdim 1..3, mm).
    Returns the shape and the stored dtype.

    Raises:
        InputTooLarge: more than ``max_voxels`` values.
        ValueError: any other problem, named in the message.
    """
    shape, dtype = _header_shape_dtype(hdr)
    if dtype.kind == "c":
        raise ValueError(f"the input is complex-valued ({dtype.name}): the tasks take real images; send the magnitude (and, for raw QSM, the phase in rad) as separate real channels")
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise ValueError(f"the input has data type {dtype.name if dtype.fields is None else 'RGB/structured ' + str(dtype)}: the tasks take real numbers (integer or floating point)")
    if len(shape) not in (3, 4):
        raise ValueError(f"the input must be a 3D volume or a 4D volume with channels last; its header claims {len(shape)} dimensions, shape {shape}")
    if len(shape) == 4 and shape[3] > max_channels:
        raise ValueError(f"the input has {shape[3]} channels (4th dimension; shape {shape}): at most {max_channels} are accepted")
    n = math.prod(shape)
    if n > max_voxels:
        raise InputTooLarge(f"the input header claims shape {shape} = {n:,} voxel values, more than the limit of {max_voxels:,}")
    zooms = np.asarray(hdr["pixdim"][1:4], dtype=np.float64)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise ValueError(f"the input's voxel sizes (pixdim) {[float(z) for z in zooms]} must be positive finite numbers (mm)")
    return shape, dtype


def check_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Refuse a voxel -> world affine that is not finite or whose 3 x 3 part is singular (zero or
    collinear voxel axes); returns the voxel sizes (mm) per array axis."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError("the input's affine (voxel -> world, mm) is not a finite 4 x 4 matrix")
    m = a[:3, :3]
    vs = np.sqrt((m**2).sum(0))
    if np.any(vs <= 0) or abs(np.linalg.det(m)) <= 1e-6 * float(np.prod(vs)):
        raise ValueError(f"the input's affine is singular (voxel sizes {[round(float(v), 6) for v in vs]} mm, or voxel axes in one plane): it cannot place the image in space")
    return tuple(float(v) for v in vs)


def _read_image_bytes(path: str | os.PathLike, hdr, nbytes: int) -> bytes:
    """The header, extensions and voxel data of a single-file NIfTI, uncompressed, checked
    against what the header claims. A gzip stream is read to its end so that its CRC is verified:
    nibabel stops reading at the last voxel and would return the garbage of a damaged stream."""
    size = hdr.template_dtype.itemsize
    need = max(int(float(hdr["vox_offset"])), size + 4) + nbytes
    with _open_raw(Path(path)) as f:
        raw = f.read(need)
        if len(raw) < need:
            raise _unreadable(f"the file is truncated: its header describes {need:,} bytes, it holds {len(raw):,}")
        if isinstance(f, gzip.GzipFile):
            _skip(f, MAX_HEADER_BYTES)  # trailing bytes (a gzip stream ends with its CRC check)
            if f.read(1):
                raise _unreadable(f"the file holds more than {MAX_HEADER_BYTES:,} bytes beyond the voxel data its header describes")
    return raw


def load_input_volume(path_or_img, max_voxels: int = DEFAULT_MAX_VOXELS, max_channels: int = MAX_CHANNELS) -> InputVolume:
    """Load a client's input image as float32 after checking its header.

    The header (and its extension chain) is read and checked first; only then the voxel data,
    which must be all there (a truncated file or a damaged gzip stream is refused, not padded).

    Args:
        path_or_img: a single-file NIfTI-1/2 (.nii or .nii.gz, recognised by content, whatever the
            file name), or a nibabel NIfTI image already in memory.
        max_voxels: largest number of voxel values (product of all dimensions, channels included);
            4 bytes each once loaded as float32.
        max_channels: largest 4th dimension.

    Returns:
        :class:`InputVolume` ``(data, affine)``: float32 array (3D, or 4D channels last) with the
        NIfTI scaling (scl_slope/scl_inter) applied, and the 4 x 4 voxel -> world affine (mm).

    Raises:
        InputTooLarge: the header claims more than ``max_voxels`` values (no voxel is read).
        ValueError: unreadable or corrupt file, complex/RGB/non-numeric data, not 3D or 4D, a
            dimension < 1, too many channels, non-positive voxel sizes, a non-finite or singular
            affine, or NaN/Inf voxels (counted). Messages never contain the file's path.
    """
    path = None
    if isinstance(path_or_img, nib.spatialimages.SpatialImage):
        if not isinstance(path_or_img, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and their pairs
            raise ValueError(f"the input must be a NIfTI image, got a {type(path_or_img).__name__}")
        img = path_or_img
        check_input_header(img.header, max_voxels, max_channels)
    else:
        path = path_or_img
        hdr = _read_header(path)
        shape, dtype = check_input_header(hdr, max_voxels, max_channels)
        klass = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
        try:
            img = klass.from_bytes(_read_image_bytes(path, hdr, math.prod(shape) * dtype.itemsize))
        except ValueError:
            raise
        except Exception as e:  # nibabel, gzip and zlib raise many types (HeaderDataError, OSError, EOFError, zlib.error)
            raise _unreadable(_short_reason(e, path)) from None
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(affine)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become Inf: counted below
            data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # nibabel's array proxy: ValueError, OSError... for data it cannot interpret
        raise _unreadable(_short_reason(e, path)) from None
    if data.shape != tuple(img.shape):
        raise _unreadable(f"read {data.shape} values for a header shape of {tuple(img.shape)}")
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise ValueError(f"input image contains {bad} NaN/Inf voxels (values beyond float32's range, +-3.4e38, count as Inf)")
    return InputVolume(data, affine)


def check_nifti_complete(path: str | os.PathLike, info: HeaderInfo, slack_bytes: int = 2**20) -> None:
    """Stream a NIfTI file once (nothing kept) to make sure it holds the voxel data its header
    claims and, for .nii.gz, that the gzip stream is intact (truncation, CRC); for files entering
    the datastore, after :func:`check_nifti_header` has bounded ``info.nbytes``.

    Reads at most ``vox_offset + info.nbytes + slack_bytes`` decompressed bytes: a stream that goes
    on beyond that (a decompression bomb behind a small header) is refused too.

    Raises:
        ValueError: truncated or damaged data, or far more data than the header claims (no paths).
    """
    p = Path(path)
    need = int(float(_read_header(p)["vox_offset"])) + int(info.nbytes)
    total = 0
    try:
        with _open_raw(p) as f:
            while chunk := f.read(min(2**20, need + slack_bytes + 1 - total)):
                total += len(chunk)
                if total > need + slack_bytes:
                    raise _unreadable(f"the file holds more than {need + slack_bytes:,} bytes of data where its header claims {need:,}")
    except ValueError:
        raise
    except Exception as e:  # truncated or damaged gzip: EOFError, gzip.BadGzipFile, zlib.error, OSError
        raise _unreadable(_short_reason(e, p)) from None
    if total < need:
        raise _unreadable(f"the file is truncated: {total:,} bytes where the header claims {need:,} (header and voxel data)")
