"""A minimal reader for numeric arrays in MATLAB level-5 `.mat` files (no scipy dependency).

PASCAL-Context's official `trainval/<id>.mat` files are MAT v5 files holding one numeric matrix,
`LabelMap`. This reads such files: 128-byte header, then data elements, each either a matrix
(miMATRIX) or a zlib-compressed element (miCOMPRESSED) wrapping one. Structs, cells, sparse and
complex arrays are skipped or refused; v7.3 (HDF5) files are refused with a clear message.
"""

import struct
import zlib

import numpy as np

from hfgd_tf import atomic_files

_MI_MATRIX = 14
_MI_COMPRESSED = 15
# Storage types of data sub-elements (the stored type may be narrower than the array class).
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8",
              13: "u8", 16: "u1"}
# Array classes that hold plain numbers: mxDOUBLE .. mxUINT64.
_NUMERIC_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4",
                    14: "i8", 15: "u8"}
_COMPLEX_FLAG = 0x08


class MatFileError(ValueError):
  pass


def _read_tag(data, offset, endian):
  """(type, nbytes, payload start, next element offset) of the data element at `offset`."""
  first, second = struct.unpack_from(endian + "II", data, offset)
  if first >> 16:  # small data element: type and size packed in 4 bytes, payload in the next 4
    return first & 0xFFFF, first >> 16, offset + 4, offset + 8
  start = offset + 8
  padded = second if first == _MI_COMPRESSED else (second + 7) // 8 * 8
  return first, second, start, start + padded


def _sub_elements(data, start, end, endian):
  """Yields (type, payload bytes) of the data elements packed in data[start:end]."""
  offset = start
  while offset + 8 <= end:
    element_type, size, payload, offset = _read_tag(data, offset, endian)
    yield element_type, data[payload:payload + size]


def _parse_matrix(data, endian):
  """(name, array or None if not a real numeric matrix) from the payload of a miMATRIX element."""
  parts = list(_sub_elements(data, 0, len(data), endian))
  if len(parts) < 3:
    return None, None
  flags = struct.unpack_from(endian + "I", parts[0][1])[0]
  array_class = flags & 0xFF
  dims_type, dims_bytes = parts[1]
  dims = np.frombuffer(dims_bytes, endian + _MI_DTYPES[dims_type]).astype(np.int64)
  name = parts[2][1].decode("ascii", "replace")
  if array_class not in _NUMERIC_CLASSES or flags >> 8 & _COMPLEX_FLAG or len(parts) < 4:
    return name, None
  real_type, real_bytes = parts[3]
  values = np.frombuffer(real_bytes, endian + _MI_DTYPES[real_type])
  if values.size != np.prod(dims):
    raise MatFileError(f"variable {name}: {values.size} values for dimensions {dims.tolist()}")
  # MATLAB stores column-major; the array class, not the storage type, is the value type.
  return name, values.reshape(dims, order="F").astype(_NUMERIC_CLASSES[array_class])


def load_variable(path, variable):
  """Returns the numeric array `variable` from the MAT v5 file at `path`."""
  data = atomic_files.read_bytes(path)
  if len(data) < 128:
    raise MatFileError(f"{path} is too short to be a MAT file")
  endian_mark = data[126:128]
  if endian_mark not in (b"IM", b"MI"):
    raise MatFileError(f"{path} is not a MATLAB level-5 file")
  endian = "<" if endian_mark == b"IM" else ">"
  version = struct.unpack_from(endian + "H", data, 124)[0]
  if version != 0x0100:
    raise MatFileError(f"{path}: MAT version {version:#x} is not supported (v7.3 files are HDF5; "
                       "re-save with -v7 or earlier)")
  found = []
  for element_type, payload in _sub_elements(data, 128, len(data), endian):
    if element_type == _MI_COMPRESSED:
      try:
        payload = zlib.decompress(payload)
      except zlib.error as e:
        raise MatFileError(f"{path}: corrupt compressed element: {e}") from e
      element_type, size, start, _ = _read_tag(payload, 0, endian)
      payload = payload[start:start + size]
    if element_type != _MI_MATRIX:
      continue
    name, array = _parse_matrix(payload, endian)
    found.append(name)
    if name == variable:
      if array is None:
        raise MatFileError(f"{path}: variable {variable} is not a real numeric array")
      return array
  raise MatFileError(f"{path} has no variable {variable} (found {found})")
