"""`sensor_msgs` Image / CompressedImage <-> numpy, with cv_bridge's semantics; the only place
that knows encodings.

Decoding yields an HxWx3 uint8 RGB array, what `Predictor` takes. The real ROS `cv_bridge` is
used for the colour conversion when it is importable (a ROS install); otherwise the same
conversions are made here, matching `cv_bridge/src/cv_bridge.cpp` (rolling):
- layout checks first: `step >= width * bytes per pixel` and `len(data) == height * step`
  (`matFromImage`), so padded rows are honoured and wrong lengths rejected;
- 16-bit data is byte-swapped when `is_bigendian` differs from this machine;
- colour codes: bayer_rggb -> `COLOR_BayerBG2RGB`, bggr -> `BayerRG`, gbrg -> `BayerGR`,
  grbg -> `BayerGB` (OpenCV names the pattern from the second row); yuv422/uyvy ->
  `YUV2RGB_UYVY`, yuv422_yuy2/yuyv -> `YUV2RGB_YUY2`; mono -> `GRAY2RGB`;
- a 16 -> 8 bit depth change after the colour conversion, scaled by 255/65535 with rounding;
- CompressedImage: `cv2.imdecode` (as `compressed_imgmsg_to_cv2`), always to 3 channels.
Depth/float images (16UC1, 32FC1, ...) carry no colour and are rejected, as cv_bridge does for
a conversion to rgb8. Every rejection is a `FrameError` with a one-line reason.
"""

from __future__ import annotations

import array as pyarray
import io
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

MAX_SIDE = 16384  # pixels per side; larger frames are rejected before any allocation
MAX_PIXELS = 1 << 26  # 67 Mpx


class FrameError(ValueError):
    """A camera message that cannot become an image (the message says why, in one line)."""


@dataclass(frozen=True)
class Encoding:
    channels: int
    depth: int  # bytes per channel
    code: int | None  # cv2 colour conversion to RGB; None: already RGB


def _table() -> dict[str, Encoding]:
    table = {}
    for depth, suffix in ((1, "8"), (2, "16")):
        table.update({
            f"rgb{suffix}": Encoding(3, depth, None),
            f"bgr{suffix}": Encoding(3, depth, cv2.COLOR_BGR2RGB),
            f"rgba{suffix}": Encoding(4, depth, cv2.COLOR_RGBA2RGB),
            f"bgra{suffix}": Encoding(4, depth, cv2.COLOR_BGRA2RGB),
            f"mono{suffix}": Encoding(1, depth, cv2.COLOR_GRAY2RGB),
            f"bayer_rggb{suffix}": Encoding(1, depth, cv2.COLOR_BayerBG2RGB),
            f"bayer_bggr{suffix}": Encoding(1, depth, cv2.COLOR_BayerRG2RGB),
            f"bayer_gbrg{suffix}": Encoding(1, depth, cv2.COLOR_BayerGR2RGB),
            f"bayer_grbg{suffix}": Encoding(1, depth, cv2.COLOR_BayerGB2RGB),
        })
    uyvy, yuyv = Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY), Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2)
    table.update({"yuv422": uyvy, "uyvy": uyvy, "yuv422_yuy2": yuyv, "yuyv": yuyv})
    return table


ENCODINGS = _table()
_LITTLE = sys.byteorder == "little"


def check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise FrameError(f"empty image ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise FrameError(f"image too large ({width}x{height}; at most {MAX_SIDE} per side)")


def _layout(msg: Any, enc: Encoding) -> np.ndarray:
    """The message bytes as an HxWxC array of its channel type (a view where possible)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    check_size(h, w)
    row = w * enc.channels * enc.depth
    if step < row:
        raise FrameError(f"step {step} < width {w} x {enc.channels * enc.depth} bytes per pixel")
    if len(msg.data) != h * step:
        raise FrameError(f"data is {len(msg.data)} bytes, expected height {h} x step {step} = {h * step}")
    raw = np.frombuffer(msg.data, np.uint8).reshape(h, step)[:, :row]
    if enc.depth == 2:
        big = bool(msg.is_bigendian)
        raw = np.ascontiguousarray(raw).view(">u2" if big else "<u2")
        if big == _LITTLE:
            raw = raw.astype(np.uint16)  # byte swap to native order
    return raw.reshape(h, w, enc.channels)


def decode_image(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB; FrameError when it cannot be one."""
    enc = ENCODINGS.get(str(msg.encoding))  # case-sensitive, as cv_bridge
    if enc is None:
        raise FrameError(f"unsupported encoding {msg.encoding!r} (not a colour image format)")
    if enc.channels == 2 and int(msg.width) % 2:
        raise FrameError(f"{msg.encoding} needs an even width, got {msg.width}")
    pixels = _layout(msg, enc)
    bridge = _ros_bridge()
    return _via_cv_bridge(bridge, msg) if bridge is not None else convert(pixels, enc)


def convert(pixels: np.ndarray, enc: Encoding) -> np.ndarray:
    """HxWxC native-order pixels of `enc` -> HxWx3 uint8 RGB, as cv_bridge's cvtColor: the colour
    conversion first, then the 16 -> 8 bit change scaled by 255/65535."""
    image = pixels[..., 0] if enc.channels == 1 else pixels
    if enc.code is not None:
        image = cv2.cvtColor(image if enc.channels != 2 else np.ascontiguousarray(image), enc.code)
    if enc.depth == 2:
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    return image


def decode_compressed(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> HxWx3 uint8 RGB; FrameError otherwise."""
    from PIL import Image as PILImage

    data = np.frombuffer(msg.data, np.uint8)
    if "compresseddepth" in str(msg.format).lower().replace(" ", ""):
        raise FrameError(f"format {msg.format!r} is a depth image, not a colour image")
    try:  # the header alone: size and format before decoding anything
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # sized below
            with PILImage.open(io.BytesIO(data.tobytes())) as probe:
                kind, (w, h) = probe.format, probe.size
    except PILImage.DecompressionBombError as exc:
        raise FrameError(f"compressed image too large ({str(exc).split('(')[0].strip()})") from None
    except Exception:  # noqa: BLE001 - PIL raises many types for garbage
        raise FrameError(f"undecodable compressed image ({len(data)} bytes, format {msg.format!r})") from None
    if kind not in ("JPEG", "PNG"):
        raise FrameError(f"compressed image is {kind}, expected JPEG or PNG")
    check_size(h, w)
    if kind == "JPEG" and not _has_jpeg_end(data):
        raise FrameError(f"truncated JPEG ({len(data)} bytes, no end-of-image marker)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.shape[:2] != (h, w):
        raise FrameError(f"corrupt {kind} ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _has_jpeg_end(data: np.ndarray) -> bool:
    """An EOI marker (FF D9) in the last bytes (encoders may pad a few bytes after it)."""
    tail = data[-16:].tobytes()
    return b"\xff\xd9" in tail


def decode(msg: Any) -> np.ndarray:
    """Image or CompressedImage -> HxWx3 uint8 RGB."""
    return decode_compressed(msg) if hasattr(msg, "format") else decode_image(msg)


# ---- the real cv_bridge, when this runs on a ROS install ----

_BRIDGE: list[Any] = []


def _ros_bridge() -> Any | None:
    """ROS cv_bridge's CvBridge if importable and working (checked once), else None.

    PyPI's `cv-bridge` is a ROS 1 port that fails on ROS 2 messages: the self-check (a 1x2 bgr8
    image to rgb8) keeps such a module out."""
    if not _BRIDGE:
        _BRIDGE.append(_load_bridge())
    return _BRIDGE[0]


def _load_bridge() -> Any | None:
    try:
        from cv_bridge import CvBridge
        from sensor_msgs.msg import Image

        bridge = CvBridge()
        probe = Image(height=1, width=2, encoding="bgr8", step=6, data=bytes([1, 2, 3, 4, 5, 6]))
        out = bridge.imgmsg_to_cv2(probe, "rgb8")
        return bridge if np.asarray(out).reshape(-1).tolist() == [3, 2, 1, 6, 5, 4] else None
    except Exception:  # noqa: BLE001 - absent or broken cv_bridge: use our own conversion
        return None


def _via_cv_bridge(bridge: Any, msg: Any) -> np.ndarray:
    try:
        return np.asarray(bridge.imgmsg_to_cv2(msg, "rgb8"))
    except Exception as exc:  # noqa: BLE001 - CvBridgeError and cv2 errors
        raise FrameError(f"cv_bridge: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def bridge_name() -> str:
    """Which conversion decodes frames here (for diagnostics and logs)."""
    return "cv_bridge" if _ros_bridge() is not None else "vltseg (cv_bridge semantics)"


# ---- numpy -> messages (the node's outputs, bag making, test cameras) ----

_BAYER_OFFSETS = {  # (row, col) of R and B in the 2x2 cell; G fills the other two
    "rggb": ((0, 0), (1, 1)), "bggr": ((1, 1), (0, 0)),
    "gbrg": ((1, 0), (0, 1)), "grbg": ((0, 1), (1, 0)),
}


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """HxWx3 -> HxW Bayer mosaic of `pattern` (each pixel keeps the channel its filter passes)."""
    (ry, rx), (by, bx) = _BAYER_OFFSETS[pattern]
    out = rgb[..., 1].copy()
    out[ry::2, rx::2] = rgb[ry::2, rx::2, 0]
    out[by::2, bx::2] = rgb[by::2, bx::2, 2]
    return out


# BT.601 limited range, the inverse of what OpenCV's YUV2RGB_UYVY / _YUY2 decode
_RGB_TO_YUV = np.array([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]])
_YUV_OFFSET = np.array([16.0, 128.0, 128.0])


def _yuv422(rgb: np.ndarray, uyvy: bool) -> np.ndarray:
    """HxWx3 (W even) -> HxWx2 packed 4:2:2, chroma averaged over pixel pairs."""
    yuv = rgb.astype(np.float32) @ _RGB_TO_YUV.T.astype(np.float32) + _YUV_OFFSET.astype(np.float32)
    u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2
    v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2
    packed = np.empty((*rgb.shape[:2], 2), np.uint8)
    luma, chroma = (1, 0) if uyvy else (0, 1)
    packed[..., luma] = np.clip(np.rint(yuv[..., 0]), 0, 255)
    packed[:, 0::2, chroma] = np.clip(np.rint(u), 0, 255)
    packed[:, 1::2, chroma] = np.clip(np.rint(v), 0, 255)
    return packed


def encode_array(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """HxWx3 uint8 RGB -> the pixel array of `encoding` (16-bit: value x 257, native order)."""
    enc = ENCODINGS.get(encoding)
    if enc is None:
        raise FrameError(f"unsupported encoding {encoding!r}; one of {', '.join(ENCODINGS)}")
    name = encoding.rstrip("0123456789")
    if name.startswith("bayer_"):
        out = _mosaic(rgb, name[len("bayer_"):])
    elif enc.channels == 2:
        out = _yuv422(rgb, uyvy=encoding in ("yuv422", "uyvy"))
    else:
        out = {"rgb": rgb, "bgr": rgb[..., ::-1], "mono": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
               "rgba": cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA), "bgra": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)}[name]
    out = np.ascontiguousarray(out)
    return out.astype(np.uint16) * 257 if enc.depth == 2 else out


def encode_image(rgb: np.ndarray, encoding: str, header: Any = None, *, pad: int = 0,
                 bigendian: bool | None = None) -> Any:
    """RGB -> sensor_msgs/Image in `encoding`, rows padded by `pad` bytes, 16-bit data in the
    byte order asked for (default: this machine's)."""
    from sensor_msgs.msg import Image

    pixels = encode_array(rgb, encoding)
    big = (not _LITTLE) if bigendian is None else bigendian
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if big else "<u2")
    h, w = rgb.shape[:2]
    rows = pixels.reshape(h, -1).view(np.uint8)
    if pad:
        rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(big), step=rows.shape[1])
    if header is not None:
        msg.header = header
    msg.data = rows.tobytes()
    return msg


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Any = None, quality: int = 90) -> Any:
    """RGB -> sensor_msgs/CompressedImage (jpeg or png), as image_transport's plugin writes it."""
    from sensor_msgs.msg import CompressedImage

    if fmt not in ("jpeg", "png"):
        raise FrameError(f"compressed format must be jpeg or png, got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", rgb[..., ::-1], params)
    if not ok:
        raise FrameError(f"could not encode {fmt}")
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8")
    if header is not None:
        msg.header = header
    msg.data = data.tobytes()
    return msg


def plane(msg: Any, dtype: Any = np.uint8) -> np.ndarray:
    """A single-channel Image's pixels (mono8 class ids, 32FC1 confidence: the node's own
    outputs, host byte order) as an HxW view, rows of `step` bytes honoured."""
    dtype = np.dtype(dtype)
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width * dtype.itemsize].view(dtype)


def to_image_msg(array: np.ndarray, encoding: str, header: Any) -> Any:
    """HxW / HxWxC array -> sensor_msgs/Image with `header` copied (host byte order)."""
    from sensor_msgs.msg import Image

    array = np.ascontiguousarray(array)
    h, w = array.shape[:2]
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(not _LITTLE),
                step=int(array.strides[0]))
    msg.header = header
    data = pyarray.array("B")  # the field's own type, filled in one copy (tobytes + array: two)
    data.frombytes(memoryview(array).cast("B"))
    msg.data = data
    return msg
