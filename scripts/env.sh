# Source me: `source scripts/env.sh` gives this shell the project's venv and the environment of
# a sourced ROS 2 workspace (AMENT_PREFIX_PATH includes the venv, where scripts/setup.sh installs
# the vltseg_ros package: ament index, share/vltseg_ros/{launch,config,rviz}, lib/vltseg_ros).
# Then `ros2 launch vltseg_ros perception.launch.py ...` (launch tools installed), `vltseg`,
# `vltseg-ros` and `python -c 'import rclpy'` work as on a ROS install.
_vltseg_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_vltseg_venv="${VLTSEG_VENV:-$_vltseg_root/.venv}"
if [ ! -x "$_vltseg_venv/bin/python" ]; then
  echo "env.sh: no venv at $_vltseg_venv; run: bash scripts/setup.sh" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "$_vltseg_venv/bin/activate"
case ":${AMENT_PREFIX_PATH:-}:" in
  *":$_vltseg_venv:"*) ;;
  *) export AMENT_PREFIX_PATH="$_vltseg_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
unset _vltseg_root _vltseg_venv
