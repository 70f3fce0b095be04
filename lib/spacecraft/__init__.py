"""The spacecraft path's ground floor: everything about a known satellite seen by a camera that
needs no neural network.

- ``geometry``: scalar-first quaternions, frames, projection (with OpenCV distortion).
- ``pose_solver``: landmarks -> EPnP + RANSAC -> weighted Levenberg-Marquardt -> pose.
- ``scores``: rotation / translation errors, the ESA score and its SPEC2021 variant.
- ``files``: the SPEED / SPEED+ formats (camera, landmarks, labels, submission, box file).
- ``renderer``: the synthetic SPEED+-layout data set.
- ``drawing``: the wireframe of the model projected at a pose.

Imports numpy, OpenCV, SciPy and ``lib.utils`` only: never torch, ``lib.dataset`` or
``lib.core`` (a test holds this), so scoring a submission starts in a fraction of a second.
"""
