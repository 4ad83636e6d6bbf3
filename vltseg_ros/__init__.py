"""vltseg_ros: ROS 2 nodes around vltseg_core.runtime.Predictor (no model math here).

The generated messages (`vltseg_ros.msg`) are installed by the interface build next to,
not inside, this source folder when working from a venv; extending `__path__` lets one
package name serve both.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
