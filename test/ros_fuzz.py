"""Hypothesis strategies of malformed camera messages: each is wrong by construction (and
checked to be rejected by the codec before it is sent), covering wrong lengths and steps,
sizes 0 and huge, unknown encodings, odd-width YUV, truncated or corrupt JPEG/PNG."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image

from vltseg_ros import image_codec

ENCODINGS = sorted(image_codec.ENCODINGS)
UNKNOWN = st.one_of(st.sampled_from(["16UC1", "32FC1", "8UC3", "64FC1", "RGB8", "jpeg", "", "nv12", "bayer_rggb"]),
                    st.text(max_size=12).filter(lambda s: s not in image_codec.ENCODINGS))


def _bytes_per_pixel(encoding: str) -> int:
    enc = image_codec.ENCODINGS[encoding]
    return enc.channels * enc.depth


@st.composite
def bad_images(draw: st.DrawFn) -> Image:
    kind = draw(st.sampled_from(["length", "step", "zero", "huge", "unknown", "odd_yuv"]))
    enc = draw(st.sampled_from(ENCODINGS))
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48)) * 2
    step = w * _bytes_per_pixel(enc) + draw(st.integers(0, 16))
    size = h * step
    if kind == "length":
        size = draw(st.integers(0, 2 * size).filter(lambda n: n != h * step))
    elif kind == "step":
        step = draw(st.integers(0, w * _bytes_per_pixel(enc) - 1))
        size = h * step
    elif kind == "zero":
        h, w = draw(st.sampled_from([(0, w), (h, 0), (0, 0)]))
        size = h * step
    elif kind == "huge":
        h, w = draw(st.integers(16385, 1 << 31)), draw(st.integers(1, 1 << 31))
        size = draw(st.integers(0, 4096))
    elif kind == "unknown":
        enc = draw(UNKNOWN)
    else:
        enc, w = draw(st.sampled_from(["yuv422", "yuyv", "uyvy", "yuv422_yuy2"])), w + 1
        step, size = 2 * w, 2 * w * h
    return Image(height=min(h, 2**32 - 1), width=min(w, 2**32 - 1), encoding=enc, step=min(step, 2**32 - 1),
                 is_bigendian=draw(st.integers(0, 1)), data=draw(st.binary(min_size=size, max_size=size)))


def _encoded(fmt: str, h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (w, h))
    return cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image)[1].tobytes()


@st.composite
def bad_compressed(draw: st.DrawFn) -> CompressedImage:
    fmt = draw(st.sampled_from(["jpeg", "png"]))
    data = _encoded(fmt, draw(st.integers(8, 64)), draw(st.integers(8, 64)), draw(st.integers(0, 99)))
    kind = draw(st.sampled_from(["truncate", "header", "garbage", "empty"]))
    if kind == "truncate":  # cut before the end marker / IEND
        data = data[: draw(st.integers(0, len(data) - 13))]
    elif kind == "header":  # overwrite the signature and first markers
        n = draw(st.integers(4, 24))
        data = draw(st.binary(min_size=n, max_size=n)) + data[n:]
    elif kind == "garbage":
        data = draw(st.binary(max_size=512))
    else:
        data = b""
    return CompressedImage(format=draw(st.sampled_from([fmt, "jpeg", "png", "rgb8; jpeg compressed bgr8"])),
                           data=data)


def rejected(msg: object) -> bool:
    try:
        image_codec.decode(msg)
    except image_codec.FrameError:
        return True
    return False
