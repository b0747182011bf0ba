"""Stream URLs that the address policy must deny: every numeric, IPv6 and encoded form of loopback, private,
link-local, metadata and multicast addresses (tests/reliability/test_ssrf.py; counted in the security figures)."""

DENIED_FORMS = [
    "rtsp://127.0.0.1/cam",
    "rtsp://127.1/cam",
    "rtsp://2130706433/cam",  # decimal 127.0.0.1
    "rtsp://0x7f000001/cam",  # hex
    "rtsp://0177.0.0.1/cam",  # octal
    "rtsp://0x7f.0.0.1/cam",
    "rtsp://[::1]/cam",
    "rtsp://[::ffff:127.0.0.1]/cam",
    "rtsp://[::ffff:7f00:1]/cam",
    "rtsp://[0:0:0:0:0:ffff:169.254.169.254]/",
    "rtsp://[64:ff9b::7f00:1]/cam",  # NAT64 of loopback
    "rtsp://[2002:7f00:1::]/cam",  # 6to4 of loopback
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "rtsp://0.0.0.0/cam",
    "rtsp://[::]/cam",
    "rtsp://10.0.0.5/cam",
    "rtsp://192.168.1.20/cam",
    "rtsp://172.16.0.1/cam",
    "rtsp://100.64.0.1/cam",
    "rtsp://224.0.0.1/cam",
    "rtsp://[fe80::1]/cam",
    "rtsp://[fc00::1]/cam",
    "rtsp://user:pw@127.0.0.1:8554/cam",
]
