"""The mirrored messages keep vision_msgs' field names and types, so a relay is trivial."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros

# Field layouts of vision_msgs 4.x (ROS 2 Humble .. Kilted), transcribed from its msg/ files,
# with the package prefix of nested vision_msgs types replaced by vltseg_ros.
VISION_MSGS_LAYOUT = {
    "Point2D": {"x": "double", "y": "double"},
    "Pose2D": {"position": "vltseg_ros/Point2D", "theta": "double"},
    "BoundingBox2D": {"center": "vltseg_ros/Pose2D", "size_x": "double", "size_y": "double"},
    "ObjectHypothesis": {"class_id": "string", "score": "double"},
    "ObjectHypothesisWithPose": {
        "hypothesis": "vltseg_ros/ObjectHypothesis",
        "pose": "geometry_msgs/PoseWithCovariance",
    },
    "Detection2D": {
        "header": "std_msgs/Header",
        "results": "sequence<vltseg_ros/ObjectHypothesisWithPose>",
        "bbox": "vltseg_ros/BoundingBox2D",
        "id": "string",
    },
    "Detection2DArray": {"header": "std_msgs/Header", "detections": "sequence<vltseg_ros/Detection2D>"},
    "VisionClass": {"class_id": "uint16", "class_name": "string"},
}
LABEL_INFO_MIRRORED = {
    "header": "std_msgs/Header",
    "class_map": "sequence<vltseg_ros/VisionClass>",
    "threshold": "float",
}


@pytest.mark.parametrize("name", sorted(VISION_MSGS_LAYOUT))
def test_mirrors_vision_msgs(ros_domain, name: str) -> None:
    from vltseg_ros import msg

    fields = getattr(msg, name).get_fields_and_field_types()
    assert fields == VISION_MSGS_LAYOUT[name]
    assert list(fields) == list(VISION_MSGS_LAYOUT[name]), "field order differs"


def test_label_info_extends_vision_msgs_label_info(ros_domain) -> None:
    from vltseg_ros.msg import LabelInfo

    fields = LabelInfo.get_fields_and_field_types()
    assert list(fields)[:3] == list(LABEL_INFO_MIRRORED)
    assert {k: fields[k] for k in LABEL_INFO_MIRRORED} == LABEL_INFO_MIRRORED
    assert fields["class_colors"] == "sequence<std_msgs/ColorRGBA>"
    assert fields["ignore_id"] == "uint16"
    assert fields["model_name"] == "string"
    assert (fields["input_width"], fields["input_height"]) == ("uint32", "uint32")
