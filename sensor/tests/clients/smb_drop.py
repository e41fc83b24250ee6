#!/usr/bin/python3
"""A psexec-style file drop for the SMB tests, with impacket's SMBConnection.

What impacket's psexec.py (and the worms modelled on it) do before creating the service: log in
with a user name and password, connect to ADMIN$ and write the binary there with putFile.

Usage: smb_drop.py HOST PORT USER PASSWORD SHARE REMOTE_NAME LOCAL_FILE [smb1]
Prints "dialect=<negotiated dialect>" and exits 0 when the file was written.
"""
import sys

from impacket.smb import SMB_DIALECT
from impacket.smbconnection import SMBConnection


def main():
    host, port, user, password, share, remote, local = sys.argv[1:8]
    smb1 = len(sys.argv) > 8 and sys.argv[8] == "smb1"
    conn = SMBConnection(host, host, sess_port=int(port), timeout=20,
                         preferredDialect=SMB_DIALECT if smb1 else None)
    conn.login(user, password)
    with open(local, "rb") as f:
        conn.putFile(share, remote, f.read)
    print("dialect=%s" % conn.getDialect())
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
