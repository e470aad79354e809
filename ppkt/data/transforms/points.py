"""Point transforms, for point samples and paired samples alike (the pairing and camera poses follow)."""

from __future__ import annotations

import math

import torch

from ppkt.data.transforms.base import S, Transform
from ppkt.geometry import rotation_about_axis


class RandomRotate(Transform[S]):
    """Rotate the points about coordinate ``axis`` (the up axis) by a uniform angle in ±``max_degrees``."""

    def __init__(self, axis: int = 2, max_degrees: float = 180.0) -> None:
        self.axis = axis
        self.max_degrees = max_degrees

    def apply(self, s: S) -> S:
        angle = math.radians(self.max_degrees) * (2 * float(torch.rand(())) - 1)
        s.transform_points(rotation_about_axis(angle, self.axis, dtype=s.points.dtype))
        return s


class RandomCrop(Transform[S]):
    """Keep the points inside a random square prism of side ``size`` metres around the up axis (a floor-plan
    crop through the whole height), centred on a random point of the sample.

    Made for scene-level segmentation: training on crops makes each step cheaper and shows the network
    partial rooms, as a camera does. Labels (and, in a paired sample, the pairs) follow their points.
    """

    def __init__(self, size: float, up_axis: int = 2) -> None:
        if size <= 0:
            raise ValueError(f"crop size must be > 0 metres, got {size}")
        self.size = float(size)
        self.up_axis = up_axis

    def apply(self, s: S) -> S:
        n = s.points.shape[0]
        if n == 0:
            return s
        plane = [a for a in range(3) if a != self.up_axis]
        centre = s.points[int(torch.randint(0, n, ())), plane]
        keep = ((s.points[:, plane] - centre).abs() <= self.size / 2).all(dim=1)
        s.select_points(keep)
        return s


class RandomColorDrop(Transform[S]):
    """With probability ``p`` replace the points' colours by mid-grey (an ``rgb`` feature of 0): the 3D
    network must then explain the teacher's features from geometry alone. The images are untouched."""

    def __init__(self, p: float) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"color_drop must be a probability in [0, 1], got {p}")
        self.p = p

    def apply(self, s: S) -> S:
        if float(torch.rand(())) < self.p:
            s.colors = torch.full_like(s.colors, 0.5)
        return s


class ColorJitter(Transform[S]):
    """Chromatic augmentation of the points' colours, drawn once per sample: a random order of the r, g, b
    channels (``permute``), a per-channel contrast factor from ``[1 − gain, 1 + gain]`` about the sample's
    mean colour plus an offset from ``[−shift, shift]``, then, with probability ``gray``, the grey value
    (channel mean) in all three channels; clamped to ``[0, 1]``. Geometry, labels and images are untouched.

    It keeps a network from reading the class off the absolute colour where colour is not a class cue (the
    synthetic rooms draw every surface's texture from one shared pool), in the spirit of the chromatic
    augmentations of MinkowskiNet's indoor recipes."""

    def __init__(
        self, permute: bool = False, gain: float = 0.4, shift: float = 0.2, gray: float = 0.2
    ) -> None:
        for name, value in (("gain", gain), ("shift", shift), ("gray", gray)):
            if not 0 <= value <= 1:
                raise ValueError(f"color jitter {name} must be in [0, 1], got {value}")
        self.permute, self.gain, self.shift, self.gray = permute, gain, shift, gray

    def apply(self, s: S) -> S:
        c = s.colors.float()
        if self.permute:
            c = c[:, torch.randperm(3)]
        if self.gain > 0 or self.shift > 0:
            gain = 1 + self.gain * (torch.rand(3) * 2 - 1)
            shift = self.shift * (torch.rand(3) * 2 - 1)
            mean = c.mean(0, keepdim=True) if len(c) else torch.zeros(1, 3)
            c = (c - mean) * gain + mean + shift
        if self.gray > 0 and float(torch.rand(())) < self.gray:
            c = c.mean(1, keepdim=True).expand_as(c)
        s.colors = c.clamp(0, 1).contiguous()
        return s


class RandomScale(Transform[S]):
    """Scale the points by a uniform factor in ``[low, high]``."""

    def __init__(self, low: float = 0.9, high: float = 1.1) -> None:
        self.low, self.high = low, high

    def apply(self, s: S) -> S:
        s.scale_points(self.low + float(torch.rand(())) * (self.high - self.low))
        return s


class RangeCrop(Transform[S]):
    """Keep the points within ``max_range`` metres of the up axis through the origin (for a LiDAR scan in
    its own frame: of the sensor), measured in the plane across the up axis. Labels, intensities and pairs
    follow their points."""

    def __init__(self, max_range: float, up_axis: int = 2) -> None:
        if not max_range > 0:
            raise ValueError(f"max_range must be > 0 metres, got {max_range}")
        self.max_range = float(max_range)
        self.up_axis = up_axis

    def apply(self, s: S) -> S:
        plane = [a for a in range(3) if a != self.up_axis]
        keep = s.points[:, plane].square().sum(dim=1) <= self.max_range**2
        if not bool(keep.all()):
            s.select_points(keep)
        return s


class LimitPoints(Transform[S]):
    """Keep at most ``max_points`` points, a uniform random subset (in their original order): bounds the
    memory of a step whatever the scan size (a 120k-point sweep). Labels, intensities and pairs follow."""

    def __init__(self, max_points: int) -> None:
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.max_points = int(max_points)

    def apply(self, s: S) -> S:
        n = s.points.shape[0]
        if n <= self.max_points:
            return s
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n)[: self.max_points]] = True
        s.select_points(keep)
        return s
