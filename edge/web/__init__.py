"""HTTP and WebRTC: the daemon's face to cashiers, operators and the fleet."""
