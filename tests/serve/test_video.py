"""har_model.serve.video: smoothing, segments and the full decode -> classify -> draw -> encode path on real clips."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from har_model.errors import HarError
from har_model.serve.video import (
    LabelPainter,
    analyse_video,
    output_size,
    segments_from_probs,
    smooth_probs,
)
import helpers
from helpers import synthetic_image


def make_clip(path: Path, seconds=(2, 2), fps: int = 10, size=(96, 72), codec: str = "libx264", times=None) -> Path:
    """A real video: ``seconds[i]`` seconds of class-i synthetic frames; ``times`` overrides frame timestamps (VFR)."""
    labels = [label for label, n in enumerate(seconds) for _ in range(int(n * fps))]
    frames = [synthetic_image(label, i, size) for i, label in enumerate(labels)]
    return helpers.write_mp4(Path(path), frames, fps=fps, codec=codec, times=times)


class ColourClassifier:
    """A stand-in with the Classifier interface: the class is the dominant colour channel (red, green, blue)."""

    labels = ["clapping", "running", "sitting"]  # helpers' synthetic classes are red, green, blue shapes

    def __init__(self):
        self.calls = []

    def predict_proba(self, frames, batch_size=32):
        self.calls.append(len(frames))
        assert len(frames) <= batch_size
        out = []
        for f in frames:
            f = np.asarray(f, dtype=np.float64)
            assert f.ndim == 3 and f.shape[2] == 3
            strong = f.reshape(-1, 3)
            strong = strong[strong.max(axis=1) > 150]  # the coloured shape, not the dark background
            score = np.exp((strong.mean(axis=0) if len(strong) else np.zeros(3)) / 40)
            out.append(score / score.sum())
        return np.asarray(out, dtype=np.float32)


def decode_all(path: Path) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        return frames, (stream.codec_context.name, stream.codec_context.pix_fmt, stream.codec_context.width, stream.codec_context.height)


# --------------------------------------------------------------------------------------------- pure maths


def test_smooth_probs_is_a_causal_rolling_mean():
    p = np.array([[1, 0], [0, 1], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    np.testing.assert_allclose(smooth_probs(p, 1), p)
    expected = [[1, 0], [0.5, 0.5], [1 / 3, 2 / 3], [1 / 3, 2 / 3], [2 / 3, 1 / 3]]
    np.testing.assert_allclose(smooth_probs(p, 3), expected, atol=1e-6)
    # a window longer than the clip is the running mean from the start
    np.testing.assert_allclose(smooth_probs(p, 100)[-1], p.mean(axis=0), atol=1e-6)


def test_segments_merge_consecutive_labels():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]])
    segs = segments_from_probs([0.0, 0.5, 1.0, 1.5, 2.0], probs, ["a", "b"], end_time=2.5)
    assert [(s.start, s.end, s.label) for s in segs] == [(0.0, 1.0, "a"), (1.0, 2.0, "b"), (2.0, 2.5, "a")]
    assert segs[0].confidence == pytest.approx(0.85)
    assert segs[1].confidence == pytest.approx(0.65)
    assert segments_from_probs([], np.zeros((0, 2)), ["a", "b"], 1.0) == []


def test_segments_say_unsure_exactly_below_the_threshold():
    probs = np.array([[0.9, 0.1], [0.65, 0.35], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]])
    segs = segments_from_probs([0.0, 0.5, 1.0, 1.5, 2.0], probs, ["a", "b"], end_time=2.5, unsure_below=0.65)
    assert [(s.start, s.end, s.label) for s in segs] == [
        (0.0, 1.0, "a"), (1.0, 1.5, "b"), (1.5, 2.5, "unsure")]  # 0.65 is not below 0.65; 0.6 and 0.6 are
    assert segs[2].confidence == pytest.approx(0.6)


def test_output_size_is_even_and_capped():
    assert output_size(97, 73, None) in ((96, 72), (98, 74))
    w, h = output_size(1920, 1080, 640)
    assert (w, h) == (640, 360)
    w, h = output_size(1081, 1921, 640)
    assert w % 2 == 0 and h % 2 == 0 and h == 640


# --------------------------------------------------------------------------------------------- full path


def test_analyse_video_segments_labels_and_annotated_output(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")  # 2 s red shapes (clapping), then 2 s green (running), 10 fps
    clf = ColourClassifier()
    out = tmp_path / "out.mp4"
    result = analyse_video(clip, clf, sample_fps=5, window=1, out_path=out, batch_size=4)

    assert result.frames == 40 and len(result.times) == 20  # every frame decoded, 5 per second classified
    assert max(clf.calls) <= 4 and sum(clf.calls) == 20
    assert [(s.label, s.start, s.end) for s in result.segments] == [("clapping", 0.0, 2.0), ("running", 2.0, 4.0)]
    assert all(s.confidence > 0.6 for s in result.segments)
    assert result.duration == pytest.approx(4.0) and not result.truncated

    frames, (codec, pix_fmt, w, h) = decode_all(out)
    assert codec == "h264" and pix_fmt == "yuv420p" and (w, h) == (96, 72)
    assert len(frames) == 40
    source, _ = decode_all(clip)
    band = LabelPainter(w, h).band  # the label band sits at the top of every frame
    for i in (0, 7, 25, 39):
        top_out, top_in = frames[i][:band].astype(int), source[i][:band].astype(int)
        assert (top_out > 200).sum() > 20  # white caption pixels drawn
        assert np.abs(top_out - top_in).mean() > 10  # the band differs from the source
        assert np.abs(frames[i][band + 8 :].astype(int) - source[i][band + 8 :].astype(int)).mean() < 12  # rest intact


def test_smoothing_window_delays_the_change_causally(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    sharp = analyse_video(clip, ColourClassifier(), sample_fps=5, window=1)
    smooth = analyse_video(clip, ColourClassifier(), sample_fps=5, window=5)
    assert [s.label for s in smooth.segments] == ["clapping", "running"]
    # with 5 samples averaged the switch comes 2 samples (0.4 s) after the real change, never before it
    assert smooth.segments[1].start == pytest.approx(2.4)
    assert sharp.segments[1].start == pytest.approx(2.0)
    np.testing.assert_allclose(smooth.raw_probs, sharp.raw_probs, atol=1e-6)
    np.testing.assert_allclose(smooth.probs, smooth_probs(smooth.raw_probs, 5), atol=1e-6)


def test_every_frame_and_duration_cap(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    every = analyse_video(clip, ColourClassifier(), sample_fps=None, window=1)
    assert len(every.times) == every.frames == 40
    capped = analyse_video(clip, ColourClassifier(), sample_fps=5, max_seconds=1.0, out_path=tmp_path / "cap.mp4")
    assert capped.truncated and capped.frames == 10 and capped.duration == pytest.approx(1.0)
    assert len(decode_all(tmp_path / "cap.mp4")[0]) == 10


def test_webm_with_variable_frame_rate_and_odd_size(tmp_path):
    times = [0.0, 0.05, 0.3, 0.31, 0.7, 1.0, 1.02, 1.5, 1.9, 2.4]  # a jittery webcam recording
    clip = make_clip(tmp_path / "cam.webm", seconds=(1,), fps=10, size=(81, 61), codec="libvpx", times=times)
    progress = []
    result = analyse_video(clip, ColourClassifier(), sample_fps=2, out_path=tmp_path / "cam.mp4", progress=lambda d, t: progress.append(d))
    assert result.frames == 10
    np.testing.assert_allclose(result.times, [0.0, 0.7, 1.0, 1.5, 2.4], atol=1e-3)  # first frame of each 0.5 s slot
    frames, (codec, _, w, h) = decode_all(tmp_path / "cam.mp4")
    assert codec == "h264" and w % 2 == 0 and h % 2 == 0 and len(frames) == 10
    assert progress and progress[-1] == pytest.approx(2.4, abs=1e-3)


# --------------------------------------------------------------------------------------------- bad input


def _avi_without_frames(tmp_path) -> Path:
    path = tmp_path / "no_frames.avi"  # a valid container with a video stream, but not one frame in it
    with av.open(str(path), "w") as c:
        stream = c.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 72, "yuv420p"
        c.start_encoding()
    return path


def _mp4_with_zeroed_frames(tmp_path) -> Path:
    data = make_clip(tmp_path / "good.mp4", seconds=(1,)).read_bytes()
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4  # keep the index, wipe the compressed frames
    assert 0 < start < end
    path = tmp_path / "zeroed.mp4"
    path.write_bytes(data[:start] + bytes(end - start) + data[end:])
    return path


def _avi_with_unknown_codec(tmp_path) -> Path:
    data = make_clip(tmp_path / "good.avi", seconds=(1,), codec="mpeg4").read_bytes()
    assert data.count(b"FMP4") == 2  # the codec's FourCC in the AVI headers
    path = tmp_path / "unknown_codec.avi"
    path.write_bytes(data.replace(b"FMP4", b"ZZZZ"))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "empty.mp4").write_bytes(b"") and None or d / "empty.mp4", "empty"),
        (lambda d: (d / "junk.mp4").write_bytes(b"\x00junk" * 500) and None or d / "junk.mp4", "not a video"),
        (lambda d: synthetic_image(0, 1).save(d / "photo.jpg") or d / "photo.jpg", "Image tab"),
        (lambda d: d / "missing.mp4", "no such video file"),
        (_avi_without_frames, "no frames"),
        (_mp4_with_zeroed_frames, "cannot decode the video"),
        (_avi_with_unknown_codec, "unknown codec"),
    ],
)
def test_bad_videos_raise_clear_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(HarError, match=message) as info:
        analyse_video(path, ColourClassifier(), out_path=tmp_path / "out.mp4")
    assert path.name in str(info.value)
    assert not (tmp_path / "out.mp4").exists()  # no half-written output left behind


def test_size_cap(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=(1,))
    with pytest.raises(HarError, match="over the video size limit"):
        analyse_video(clip, ColourClassifier(), max_bytes=clip.stat().st_size - 1)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(4):
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    with pytest.raises(HarError, match="no video stream"):
        analyse_video(path, ColourClassifier())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command to tag a rotation")
def test_phone_rotation_is_applied(tmp_path):
    clip = make_clip(tmp_path / "landscape.mp4", seconds=(1,), size=(96, 64))
    rotated = tmp_path / "portrait.mp4"  # same pixels, tagged "display rotated 90 degrees" like a phone clip
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated)], check=True)
    with av.open(str(rotated)) as c:
        if next(c.decode(video=0)).rotation != 90:
            pytest.skip("this ffmpeg does not write the rotation tag")
    result = analyse_video(rotated, ColourClassifier(), out_path=tmp_path / "out.mp4")
    frames, (_, _, w, h) = decode_all(tmp_path / "out.mp4")
    assert (w, h) == (64, 96) and result.frames == 10
    source, _ = decode_all(clip)
    band = LabelPainter(w, h).band
    expected = np.rot90(source[3], 1)  # counter-clockwise, as players show it
    assert np.abs(frames[3][band:].astype(int) - expected[band:].astype(int)).mean() < 12
