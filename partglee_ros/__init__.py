"""PartGLEE hierarchical object/part segmentation: model, runtime and (in ``partglee_ros.ros``) the ROS 2 layer.

Everything outside ``partglee_ros.ros`` is importable without ROS, for training and offline tools.
"""

__version__ = "0.1.0"

# The colcon build generates ``partglee_ros.msg`` / ``partglee_ros.srv`` into the install space; extending the
# package path lets a source checkout on PYTHONPATH (tests, development) still find them there.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
