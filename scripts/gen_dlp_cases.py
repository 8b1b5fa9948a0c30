#!/usr/bin/env python3
"""Write the DLP case files under policies/tests/dlp/ (generated; do not edit).

    scripts/gen_dlp_cases.py            write the files
    scripts/gen_dlp_cases.py --check    exit 1 if a committed file differs

Files:
    detectors.yaml   positive and negative samples per detector: valid and
                     invalid checksums, real-looking values and documented
                     test values (card networks' test numbers, registry
                     example IBANs, AWS's example key)
    weights.yaml     each weight format, built here byte by byte the way the
                     real tools write it (safetensors, GGUF, NumPy .npy,
                     HDF5, PyTorch zip and legacy pickle, ONNX), whole or as
                     base64 inside JSON, and near misses
    redaction.yaml   redacted bodies compared byte for byte (mask, hash and
                     drop; JSON kept valid; text bodies)
    minimise.yaml    the fields each flow (and module) drops
    streaming.yaml   bodies given as `body_chunks`, with matches straddling
                     the chunk edges; findings with absolute offsets

Standard library only; the output depends on nothing but this file (fixed
seeds, no clock). `cargo test -p portcullis-engine --test dlp_cases` runs
`--check` so a stale committed file fails the build.
"""

import base64
import hashlib
import hmac
import io
import json
import os
import pickle
import random
import struct
import sys
import types
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "policies", "tests", "dlp")

# ---------------------------------------------------------------- values --


def luhn_ok(digits):
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_complete(stem):
    for d in "0123456789":
        if luhn_ok(stem + d):
            return stem + d
    raise AssertionError(stem)


def group(number, sizes, sep=" "):
    out, at = [], 0
    for n in sizes:
        out.append(number[at:at + n])
        at += n
    assert at == len(number), (number, sizes)
    return sep.join(out)


def iban_check(country, bban):
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def iban_ok(iban):
    s = iban.replace(" ", "")
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def spaced(iban):
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))


def nhs_ok(d):
    total = sum(int(c) * (10 - i) for i, c in enumerate(d[:9]))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(d[9])


NIF_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def nif(number):
    return f"{number:08d}{NIF_LETTERS[number % 23]}"


def nie(prefix, number):
    lead = "XYZ".index(prefix)
    return f"{prefix}{number:07d}{NIF_LETTERS[int(f'{lead}{number:07d}') % 23]}"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_hs256(claims, key=b"portcullis-test-key"):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def pem(label, seed, lines=12):
    rng = random.Random(seed)
    raw = bytes(rng.getrandbits(8) for _ in range(48 * lines))
    text = base64.b64encode(raw).decode()
    body = "\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"


def digest16(text):
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:16]


# --------------------------------------------------------------- weights --
# Each builder writes what the real tool writes for the same tensors
# (checked against numpy, safetensors, h5py, gguf and onnx when this file
# was written; the layouts are their published formats).

TENSOR = struct.pack("<16f", *[((i * 37) % 17 - 8) / 16.0 for i in range(16)])  # a 4x4 float32


def safetensors(tensors, metadata=None):
    """safetensors: u64 LE header length, JSON header (compact; entries
    sorted with __metadata__ first, as the Rust writer does), padded with
    spaces to a multiple of 8, then the data."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def npy(descr, shape, raw, version=(1, 0)):
    """NumPy .npy: magic, version, header length (u16 LE in 1.0, u32 LE in
    2.0/3.0), a dict literal padded with spaces and a newline so the data
    starts at a multiple of 64."""
    shape_text = "(" + "".join(f"{n}, " for n in shape).rstrip(" ")
    shape_text = shape_text[:-1] + ")" if len(shape) > 1 else shape_text + ")"
    if not shape:
        shape_text = "()"
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}".encode()
    prefix = 10 if version == (1, 0) else 12
    header += b" " * (-(prefix + len(header) + 1) % 64) + b"\n"
    length = struct.pack("<H", len(header)) if version == (1, 0) else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes(version) + length + header + raw


def hdf5_v0(eof=2048):
    """HDF5 superblock version 0 (h5py's default, libver 'earliest'):
    signature; superblock, free-space, root symbol table and shared header
    versions 0; 8-byte offsets and lengths; group leaf K 4, internal K 16;
    consistency flags; base address 0, free-space undefined, end of file,
    driver info undefined; the root group's symbol table entry."""
    undefined = b"\xff" * 8
    sb = b"\x89HDF\r\n\x1a\n" + bytes([0, 0, 0, 0, 0, 8, 8, 0])
    sb += struct.pack("<HH", 4, 16) + struct.pack("<I", 0)
    sb += struct.pack("<Q", 0) + undefined + struct.pack("<Q", eof) + undefined
    # Root group symbol table entry: link name offset, object header
    # address, cache type 1 (B-tree and heap addresses), reserved, scratch.
    sb += struct.pack("<QQII", 0, 96, 1, 0) + struct.pack("<QQ", 136, 680)
    return sb + bytes(eof - len(sb))


def lookup3(data, initval=0):
    """Bob Jenkins' lookup3 hashlittle, as HDF5 checksums metadata."""
    def rot(x, k):
        return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & 0xFFFFFFFF
    i = 0
    while length > 12:
        a = (a + data[i] + (data[i + 1] << 8) + (data[i + 2] << 16) + (data[i + 3] << 24)) & 0xFFFFFFFF
        b = (b + data[i + 4] + (data[i + 5] << 8) + (data[i + 6] << 16) + (data[i + 7] << 24)) & 0xFFFFFFFF
        c = (c + data[i + 8] + (data[i + 9] << 8) + (data[i + 10] << 16) + (data[i + 11] << 24)) & 0xFFFFFFFF
        a = (a - c) & 0xFFFFFFFF; a ^= rot(c, 4); c = (c + b) & 0xFFFFFFFF
        b = (b - a) & 0xFFFFFFFF; b ^= rot(a, 6); a = (a + c) & 0xFFFFFFFF
        c = (c - b) & 0xFFFFFFFF; c ^= rot(b, 8); b = (b + a) & 0xFFFFFFFF
        a = (a - c) & 0xFFFFFFFF; a ^= rot(c, 16); c = (c + b) & 0xFFFFFFFF
        b = (b - a) & 0xFFFFFFFF; b ^= rot(a, 19); a = (a + c) & 0xFFFFFFFF
        c = (c - b) & 0xFFFFFFFF; c ^= rot(b, 4); b = (b + a) & 0xFFFFFFFF
        length -= 12
        i += 12
    tail = data[i:] + bytes(12)
    if length > 0:
        c = (c + tail[8] + (tail[9] << 8) + (tail[10] << 16) + (tail[11] << 24)) & 0xFFFFFFFF
        b = (b + tail[4] + (tail[5] << 8) + (tail[6] << 16) + (tail[7] << 24)) & 0xFFFFFFFF
        a = (a + tail[0] + (tail[1] << 8) + (tail[2] << 16) + (tail[3] << 24)) & 0xFFFFFFFF
        c ^= b; c = (c - rot(b, 14)) & 0xFFFFFFFF
        a ^= c; a = (a - rot(c, 11)) & 0xFFFFFFFF
        b ^= a; b = (b - rot(a, 25)) & 0xFFFFFFFF
        c ^= b; c = (c - rot(b, 16)) & 0xFFFFFFFF
        a ^= c; a = (a - rot(c, 4)) & 0xFFFFFFFF
        b ^= a; b = (b - rot(a, 14)) & 0xFFFFFFFF
        c ^= b; c = (c - rot(b, 24)) & 0xFFFFFFFF
    return c


def hdf5_v3(eof=2048):
    """HDF5 superblock version 3 (h5py with libver='latest'): signature,
    version 3, 8-byte offsets and lengths, flags, base address,
    superblock extension (undefined), end of file, root object header
    address, and the lookup3 checksum of all of it."""
    sb = b"\x89HDF\r\n\x1a\n" + bytes([3, 8, 8, 0])
    sb += struct.pack("<Q", 0) + b"\xff" * 8 + struct.pack("<Q", eof) + struct.pack("<Q", 48)
    sb += struct.pack("<I", lookup3(sb))
    return sb + bytes(eof - len(sb))


def gguf(version=3, big_endian=False):
    """GGUF: magic, version, tensor count and metadata count (u64), the
    metadata (key: u64 length + bytes, u32 type, value), tensor infos
    (name, u32 dims, u64 each, u32 ggml type, u64 offset), padding to the
    32-byte alignment, data. What gguf-py's GGUFWriter writes for one
    4x4 F32 tensor with general.architecture = llama (byte for byte)."""
    e = ">" if big_endian else "<"

    def string(s):
        return struct.pack(e + "Q", len(s)) + s.encode()
    out = b"GGUF" + struct.pack(e + "IQQ", version, 1, 1)
    out += string("general.architecture") + struct.pack(e + "I", 8) + string("llama")
    out += string("w") + struct.pack(e + "I", 2) + struct.pack(e + "QQ", 4, 4) + struct.pack(e + "IQ", 0, 0)
    out += bytes(-len(out) % 32)
    return out + TENSOR


def _install_fake_torch():
    """Minimal stand-ins named like torch's own globals, so that pickle
    writes the very opcodes torch.save writes (GLOBAL torch._utils
    _rebuild_tensor_v2, torch FloatStorage, BINPERSID)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise NotImplementedError
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    class FloatStorage:
        pass
    FloatStorage.__module__ = "torch"
    FloatStorage.__qualname__ = "FloatStorage"
    torch.FloatStorage = FloatStorage
    torch._utils = utils
    sys.modules.setdefault("torch", torch)
    sys.modules.setdefault("torch._utils", utils)
    return sys.modules["torch"], sys.modules["torch._utils"]


class _Tensor:
    def __reduce__(self):
        torch, utils = _install_fake_torch()
        storage = ("storage", torch.FloatStorage, "0", "cpu", 16)
        import collections
        return (utils._rebuild_tensor_v2, (_Persistent(storage), 0, (4, 4), (4, 1), False, collections.OrderedDict()))


class _Persistent:
    def __init__(self, pid):
        self.pid = pid


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Persistent) else None


def torch_state_pickle():
    """The data.pkl torch.save writes for {"weight": <4x4 float tensor>}:
    protocol 2, an OrderedDict, _rebuild_tensor_v2 with a persistent
    storage id ('storage', torch.FloatStorage, '0', 'cpu', 16)."""
    import collections
    _install_fake_torch()
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(collections.OrderedDict([("weight", _Tensor())]))
    return buf.getvalue()


def torch_zip(archive="archive"):
    """torch.save (zip format since 1.6): stored entries `<archive>/data.pkl`
    first, then .format_version, byteorder, data/0 (the storage), version
    and .data/serialization_id; every entry's data aligned to 64 bytes
    with an extra field, as PyTorchFileWriter (miniz) does; then the
    central directory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        entries = [("data.pkl", torch_state_pickle()), (".format_version", b"1"),
                   ("byteorder", b"little"), ("data/0", TENSOR), ("version", b"3\n"),
                   (".data/serialization_id", b"1234567890123456789012345678901234567890")]
        for name, data in entries:
            info = zipfile.ZipInfo(f"{archive}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            offset = buf.tell() + 30 + len(info.filename) + 4
            info.extra = b"FB" + struct.pack("<H", -offset % 64) + bytes(-offset % 64)
            z.writestr(info, data)
    return buf.getvalue()


def torch_legacy():
    """torch.save(_use_new_zipfile_serialization=False): the magic number
    (LONG1 0x1950a86a20f9469cfc6c), protocol version 1001, sys info, the
    object (protocol 2 with persistent storage ids), the storage keys,
    then each storage's element count and bytes."""
    out = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    out += pickle.dumps(1001, protocol=2)
    out += pickle.dumps({"protocol_version": 1001, "little_endian": True,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    out += torch_state_pickle()
    out += pickle.dumps(["0"], protocol=2)
    return out + struct.pack("<q", 16) + TENSOR


def numpy_pickle(protocol):
    """pickle.dumps of a float32 numpy array: numpy's reconstruct globals
    (protocol 2 and 4) or _frombuffer with an out-of-band-capable buffer
    (protocol 5), as numpy 2 writes them."""
    if protocol == 5:
        return (b"\x80\x05\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01w\x94"
                b"\x8c\x13numpy._core.numeric\x94\x8c\x0b_frombuffer\x94\x93\x94(\x96@\x00\x00\x00\x00\x00\x00\x00"
                + TENSOR + b"\x8c\x05numpy\x94\x8c\x05dtype\x94\x93\x94\x8c\x02f4\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94bK\x04K\x04\x86\x94\x8c\x01C\x94t\x94R\x94s.")
    module = "numpy._core.multiarray"
    if protocol == 2:
        return (b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01c" + module.encode() + b"\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85q\x04c_codecs\nencode\nq\x05X\x01\x00\x00\x00bq\x06X\x06\x00\x00\x00latin1q\x07\x86q\x08Rq\t\x87q\nRq\x0b(K\x01K\x04K\x04\x86q\x0ccnumpy\ndtype\nq\rX\x02\x00\x00\x00f4q\x0e\x89\x88\x87q\x0fRq\x10(K\x03X\x01\x00\x00\x00<q\x11NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x12b\x89C@" + TENSOR + b"q\x13tq\x14bs.")
    return (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01w\x94\x8c\x16" + module.encode()
            + b"\x94\x8c\x0c_reconstruct\x94\x93\x94\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94R\x94(K\x01K\x04K\x04\x86\x94h\x05\x8c\x05dtype\x94\x93\x94\x8c\x02f4\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x89C@" + TENSOR + b"\x94t\x94bs.")


def pb_varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb(field, value):
    """One protobuf field: varint for ints, length-delimited for bytes."""
    if isinstance(value, int):
        return pb_varint(field << 3) + pb_varint(value)
    if isinstance(value, str):
        value = value.encode()
    return pb_varint(field << 3 | 2) + pb_varint(len(value)) + value


def onnx_model(producer="pytorch", ir_version=8):
    """ONNX ModelProto as onnx's SerializeToString writes it (fields in
    number order): ir_version (1), producer_name (2), producer_version
    (3), graph (7: node MatMul, name, initializer W as raw float data,
    input X and output Y of type float [1, 4]), opset_import (8: ai.onnx
    17)."""
    def value_info(name):
        shape = pb(1, pb(1, 1)) + pb(1, pb(1, 4))                  # dims 1, 4
        tensor_type = pb(1, 1) + pb(2, shape)                       # elem_type FLOAT, shape
        return pb(1, name) + pb(2, pb(1, tensor_type))              # name, type.tensor_type
    node = pb(1, "X") + pb(1, "W") + pb(2, "Y") + pb(3, "MatMul_0") + pb(4, "MatMul")
    init = pb(1, 4) + pb(1, 4) + pb(2, 1) + pb(8, "W") + pb(9, TENSOR)
    graph = pb(1, node) + pb(2, "main_graph") + pb(5, init) + pb(11, value_info("X")) + pb(12, value_info("Y"))
    model = pb(1, ir_version)
    if producer:
        model += pb(2, producer) + pb(3, "2.1.0")
    return model + pb(7, graph) + pb(8, pb(1, "") + pb(2, 17))


def docx_zip():
    """An ordinary zip (a word document's layout): not weights."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in [("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:document/>"),
                           ("word/data/document1", b"x")]:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


# ----------------------------------------------------------------- cases --

DEFAULTS = {
    "principal": {"type": "User", "id": "alice@example.com"},
    "action": "export",
    "resource": {"type": "App", "id": "sales-cloud"},
    "context": {"ip": "203.0.113.7"},
    "now": "2026-11-22T10:00:00Z",
}

PII = {"card", "iban", "email", "phone", "nhs_number", "es_nif"}
SECRETS = {"private_key", "aws_access_key_id", "jwt", "generic_secret", "salesforce_session_id",
           "salesforce_consumer_key", "salesforce_refresh_token"}


def outcome_for(kinds):
    """What the default bundle's dlp.cedar decides for an export with these
    findings (from an address, by alice)."""
    if any(k.startswith("model_weights") for k in kinds) or SECRETS & set(kinds):
        return "deny"
    if PII & set(kinds):
        return "redact"
    return "allow"


def case(name, body=None, kinds=(), body_base64=None, chunks=None, spans=None, extra=None, outcome=True):
    request = {}
    if body is not None:
        request["body"] = body
    if body_base64 is not None:
        request["body_base64"] = base64.b64encode(body_base64).decode()
    if chunks is not None:
        request["body_chunks"] = chunks
    expect = {"findings": list(kinds)}
    if outcome:
        expect["outcome"] = outcome_for(kinds)
    if spans is not None:
        expect["finding_spans"] = [{"kind": k, "offset": o, "length": n} for k, o, n in spans]
    if extra:
        expect.update(extra)
    return {"name": name, "request": request, "expect": expect}


def detectors():
    c = []
    # Cards: each network's prefixes and lengths, printed as people do.
    cards = [
        ("Visa 16", "4111111111111111", (4, 4, 4, 4)),
        ("Visa 13", "4222222222222", None),
        ("Visa 19", luhn_complete("400000000000000000"), (4, 4, 4, 4, 3)),
        ("Mastercard 51-55", "5555555555554444", (4, 4, 4, 4)),
        ("Mastercard 2-series low", luhn_complete("222100000000000"), (4, 4, 4, 4)),
        ("Mastercard 2-series high", luhn_complete("272099999999999"), None),
        ("Amex 34", luhn_complete("34000000000000"), (4, 6, 5)),
        ("Amex 37", "378282246310005", (4, 6, 5)),
        ("Discover 6011", "6011111111111117", (4, 4, 4, 4)),
        ("Discover 644-649", luhn_complete("644564456445644"), None),
        ("Discover 65 19 digits", luhn_complete("650000000000000000"), None),
        ("JCB", "3530111333300000", (4, 4, 4, 4)),
        ("JCB 3589", luhn_complete("358900000000000"), None),
        ("UnionPay 16", "6200000000000005", (4, 4, 4, 4)),
        ("UnionPay 19", "6205500000000000004", None),
        ("UnionPay 81", luhn_complete("817199992766000"), (4, 4, 4, 4)),
        ("Diners 36 (14)", "36227206271667", (4, 6, 4)),
        ("Diners 300-305 (14)", "30569309025904", None),
        ("Diners 38 (16)", luhn_complete("380000000000000"), None),
    ]
    for label, number, sizes in cards:
        assert luhn_ok(number), label
        c.append(case(f"card: {label}, with card context", f'{{"note": "paid by card {number} today"}}', ["card"]))
        if sizes:
            c.append(case(f"card: {label}, spaced", f'{{"pan": "{group(number, sizes)}"}}', ["card"]))
            c.append(case(f"card: {label}, dashed", f"Card no. {group(number, sizes, '-')}.", ["card"]))
    c.append(case("card: a bare 16-digit Visa without context is still a card (60)", "value 4111111111111111 end", ["card"]))
    bad = "4111111111111112"
    c.append(case("card: Luhn fails", f'{{"note": "card {bad}"}}', []))
    c.append(case("card: Luhn fails, spaced", f'{{"note": "card {group(bad, (4, 4, 4, 4))}"}}', []))
    amex16 = luhn_complete("370000000000000")
    c.append(case("card: Amex prefix with 16 digits is no brand's", f"card {amex16}", []))
    visa15 = luhn_complete("41111111111111")
    c.append(case("card: Visa prefix with 15 digits is no brand's", f"card {visa15}", []))
    c.append(case("card: Luhn-valid without a brand prefix", "card 1234 5678 1234 5670", []))
    epoch_ms = next(f"17000000000{d}{e}" for d in "0123456789" for e in "0123456789" if luhn_ok(f"17000000000{d}{e}"))
    c.append(case("card: a Luhn-valid epoch-millis timestamp is not a card", f'{{"created_ms": {epoch_ms}}}', []))
    c.append(case("card: a Luhn-valid epoch-millis timestamp, even after a card word", f"card updated at {epoch_ms}", []))
    stamp = next(f"202401151030{d}{e}" for d in "0123456789" for e in "0123456789" if luhn_ok(f"202401151030{d}{e}"))
    c.append(case("card: a Luhn-valid compact timestamp is not a card", f'{{"ts": "{stamp}"}}', []))
    c.append(case("card: a Luhn-valid order number with order context is not flagged", '{"order_id": "4111111111111111", "status": "shipped"}', []))
    c.append(case("card: an invoice reference that passes Luhn is not flagged", "Invoice ref 4532 0151 1283 0366 paid", []))
    c.append(case("card: glued to letters", "id abc4111111111111111x", []))

    # IBAN: registry examples (print and electronic form) and computed ones.
    ibans = ["GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606",
             "NL91ABNA0417164300", "ES9121000418450200051332", "IT60X0542811101000000123456",
             "BE68539007547034", "CH9300762011623852957", "AT611904300234573201", "NO9386011117947",
             "MT84MALT011000012345MTLCAST001S", "SA0380000000608010167519", "PL61109010140000071219812874",
             "PT50000201231234567890154", "IE29AIBK93115212345678", "SE4550000000058398257466"]
    for country, bban in [("LC", "HEMM000100010012001200023015"), ("RU", "04452560040702810412345678901"),
                          ("AX", "12345600000785"), ("HN", "CABF00000000000250005469"),
                          ("GF", "2004101005050001" + "3M02606"), ("XK", "1212012345678906")]:
        ibans.append(iban_check(country, bban))
    for iban in ibans:
        assert iban_ok(iban), iban
        c.append(case(f"iban: {iban[:2]} ({len(iban)}) printed in groups", f'{{"bank_account": "IBAN {spaced(iban)}"}}', ["iban"]))
        c.append(case(f"iban: {iban[:2]} ({len(iban)}) electronic form", f"pay to {iban} today", ["iban"]))
    wrong_check = "GB83WEST12345698765432"
    c.append(case("iban: wrong check digits", f"IBAN {spaced(wrong_check)}", []))
    c.append(case("iban: a valid DE IBAN with one digit changed", "IBAN DE89 3704 0044 0532 0130 01", []))
    c.append(case("iban: wrong length for its country", "IBAN DE8937040044053201300012", []))
    c.append(case("iban: not a registry country", f"IBAN {iban_check('QQ', 'WEST12345698765432')}", []))
    c.append(case("iban: mixed grouping is no print form", "IBAN DE89 37040044 0532 0130 00", []))

    # E-mail.
    for addr in ["ann.lee@example.com", "bob+crm@mail.example.co.uk", "o'connor@example.ie".replace("'", ""),
                 "x_y-z%1@sub-domain.example.museum"]:
        c.append(case(f"email: {addr}", f'{{"Email": "{addr}"}}', ["email"]))
    for addr in ["ann..lee@example.com", "user@localhost", "a@-bad.example.com", "name@example.c0m"]:
        c.append(case(f"email: not an address ({addr})", f'{{"note": "{addr}"}}', []))

    # Phones: E.164 with and without context; national needs context.
    for text, kinds in [("+44 20 7946 0958", ["phone"]), ("tel: +1 (415) 555-0132", ["phone"]),
                        ('"MobilePhone": "+34 612 345 678"', ["phone"]), ("whatsapp +4915112345678", ["phone"]),
                        ("call me on 020 7946 0958", ["phone"]), ('"Phone": "(020) 7946 0958"', ["phone"]),
                        ("ref 020 7946 0958", []), ("phone 2024-01-15", []), ("+0 20 7946 0958", []),
                        ("+12 34", [])]:
        c.append(case(f"phone: {text}", text, kinds))

    # UK NHS numbers (mod 11).
    c.append(case("nhs: valid with context", "NHS number: 943 476 5919", ["nhs_number"]))
    c.append(case("nhs: valid, compact, patient context", '{"patient": "4010232137"}', ["nhs_number"]))
    assert nhs_ok("9434765919") and nhs_ok("4010232137") and not nhs_ok("9434765918")
    c.append(case("nhs: check digit wrong", "NHS number: 943 476 5918", []))
    c.append(case("nhs: valid but without context stays below the threshold", "x 943 476 5919", []))

    # Spanish DNI/NIF and NIE (control letter).
    for text in [f"DNI {nif(12345678)}", f"NIF: {nif(45678912)}", f"NIE {nie('X', 1234567)}",
                 f"nie {nie('Y', 7654321).lower()}", f"documento {nie('Z', 1111111)}", f"x {nif(87654321)[:8]}-{nif(87654321)[8]} y"]:
        c.append(case(f"es_nif: {text}", text, ["es_nif"]))
    c.append(case("es_nif: wrong control letter", "DNI 12345678A", []))
    c.append(case("es_nif: NIE with the wrong letter", "NIE X1234567A", []))

    # IP addresses.
    c.append(case("ipv4: client address", '{"LastLoginIp__c": "198.51.100.23"}', ["ipv4"]))
    c.append(case("ipv6: compressed", "remote addr 2001:db8::8a2e:370:7334 ok", ["ipv6"]))
    c.append(case("ipv6: full form", "x 2001:0db8:85a3:0000:0000:8a2e:0370:7334 y", ["ipv6"]))
    c.append(case("ipv6: IPv4-mapped", "client ::ffff:192.0.2.128 said", ["ipv6"]))
    c.append(case("ipv4: a version number is not an address", "version 1.2.3.4", []))
    c.append(case("ipv4: octet above 255", "x 999.1.1.1", []))
    c.append(case("ipv4: an OID is not an address", "oid 1.3.6.1.4.1", []))
    c.append(case("ipv6: times and paths are not addresses", "at 10:00:00 the Self::add and aa:bb:cc:dd:ee:ff", []))

    # Secrets.
    for key in ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A", "AKIA2E0A8F3B244C9986"]:
        c.append(case(f"aws: access key id {key}", f"aws_access_key_id = {key}", ["aws_access_key_id"]))
    c.append(case("aws: lower case is not a key id", "AKIAiosfodnn7example", []))
    c.append(case("aws: 21 characters is not a key id", "AKIAIOSFODNN7EXAMPLE1", []))
    for label in ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY",
                  "DSA PRIVATE KEY", "PGP PRIVATE KEY BLOCK"]:
        block = pem(label, label)
        c.append(case(f"private key: {label}", f"key:\n{block}\n", ["private_key"]))
        c.append(case(f"private key: {label} inside JSON", json.dumps({"pem": block}), ["private_key"]))
    c.append(case("private key: a public key is not", pem("PUBLIC KEY", 1), []))
    c.append(case("private key: a certificate is not", pem("CERTIFICATE", 2), []))
    token = jwt_hs256({"sub": "005xx000001Svq", "iss": "https://login.crm.example.com", "exp": 1795000000})
    c.append(case("jwt: HS256 bearer token", f"Authorization: Bearer {token}", ["jwt"]))
    none_alg = b64url(b'{"alg":"none"}') + "." + b64url(b'{"sub":"x"}') + "."
    c.append(case("jwt: unsecured (alg none)", f'{{"id_token": "{none_alg}"}}', ["jwt"]))
    c.append(case("jwt: header without alg is not a JWT", b64url(b'{"typ":"JWT","x":1}') + "." + b64url(b"{}") + ".c2ln", []))
    for text in ['{"client_secret": "q8Zr3LmT9vXw2NcY7pKd5HsB"}', "password=Tr0ub4dor!3xKq9ZpLm2Vw", "api_key: 'f3a9c1e7b2d84a6f9e0c1b2a3d4e5f60'"]:
        c.append(case(f"generic secret: {text[:20]}", text, ["generic_secret"]))
    c.append(case("generic secret: low entropy is not", "password=aaaaaaaaaaaaaaaaaaaaaaaa", []))
    c.append(case("generic secret: a URL after a keyword is not", '{"token_url": "https://login.salesforce.com/services/oauth2/token"}', []))
    c.append(case("generic secret: high entropy without a keyword is not", "value q8Zr3LmT9vXw2NcY7pKd5HsB", []))
    rng = random.Random(6)
    tail = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._") for _ in range(96))
    c.append(case("salesforce: session id (org id 15, !, 96 chars)", f"sid=00D5g000004XyZ1!{tail};", ["salesforce_session_id"]))
    c.append(case("salesforce: session id with an 18-char org id", f"Cookie: sid=00D5g000004XyZ1EAA!{tail}", ["salesforce_session_id"]))
    c.append(case("salesforce: no ! is not a session id", f"00D5g000004XyZ1{tail}", []))
    c.append(case("salesforce: a short tail is not a session id", f"00D5g000004XyZ1!{tail[:40]}", []))
    ck = "3MVG9" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._") for _ in range(80))
    c.append(case("salesforce: connected app consumer key", f'{{"client_id": "{ck}"}}', ["salesforce_consumer_key"]))
    c.append(case("salesforce: a short 3MVG9 string is not", "3MVG9abcdefghijklmnopqrstuvwxyz", []))
    rt = "5Aep861" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._") for _ in range(80))
    c.append(case("salesforce: refresh token", f'{{"refresh": "{rt}"}}', ["salesforce_refresh_token"]))
    c.append(case("salesforce: refresh token, upper-case prefix", "rt " + rt.replace("5Aep861", "5AEP861"), ["salesforce_refresh_token"]))

    # Values right after a JSON escape (a line break inside a string).
    c.append(case("json escape: a card on the line after \\n", json.dumps({"note": "paid:\n4111111111111111"}), ["card"]))
    c.append(case("json escape: an e-mail after \\n starts after the escape", json.dumps({"note": "contact\nann@example.com"}),
                  ["email"], spans=[("email", len('{"note": "contact\\n'), len("ann@example.com"))]))
    c.append(case("json escape: an AWS key after \\t", json.dumps({"env": "KEY\tAKIAIOSFODNN7EXAMPLE"}), ["aws_access_key_id"]))

    # Several kinds in one record, in body order.
    body = json.dumps({"Name": "Ann Lee", "Email": "ann.lee@example.com", "Card__c": "4111 1111 1111 1111",
                       "IBAN__c": "GB82 WEST 1234 5698 7654 32", "Phone": "+44 20 7946 0958"})
    c.append(case("several kinds in one record, in order", body, ["email", "card", "iban", "phone"]))
    return c


def weights():
    c = []
    files = [
        ("safetensors with __metadata__ (as safetensors.torch.save_file writes)",
         safetensors({"bias": ("F32", [4], TENSOR[:16]), "weight": ("F32", [4, 4], TENSOR)}, {"format": "pt"}),
         "model_weights.safetensors"),
        ("safetensors without metadata, BF16", safetensors({"w": ("BF16", [4, 2], TENSOR[:16])}), "model_weights.safetensors"),
        ("GGUF v3", gguf(3), "model_weights.gguf"),
        ("GGUF v2", gguf(2), "model_weights.gguf"),
        ("GGUF v3 big-endian", gguf(3, big_endian=True), "model_weights.gguf"),
        ("NumPy .npy 1.0 <f4 (4, 4)", npy("<f4", (4, 4), TENSOR), "model_weights.npy"),
        ("NumPy .npy 2.0", npy("<f4", (16,), TENSOR, version=(2, 0)), "model_weights.npy"),
        ("NumPy .npy 3.0 (utf-8 header)", npy("<f4", (16,), TENSOR, version=(3, 0)), "model_weights.npy"),
        ("HDF5 superblock v0 at 0", hdf5_v0(), "model_weights.hdf5"),
        ("HDF5 superblock v3 (checksummed) at 0", hdf5_v3(), "model_weights.hdf5"),
        ("HDF5 after a 512-byte user block", bytes(512) + hdf5_v0(), "model_weights.hdf5"),
        ("HDF5 after a 2048-byte user block", b"user block\n" + bytes(2037) + hdf5_v3(), "model_weights.hdf5"),
        ("PyTorch zip (torch.save, archive/data.pkl)", torch_zip(), "model_weights.pytorch_zip"),
        ("PyTorch zip saved as model.pt (model/data.pkl)", torch_zip("model"), "model_weights.pytorch_zip"),
        ("PyTorch legacy pickle (magic number, protocol 2)", torch_legacy(), "model_weights.pickle"),
        ("torch state dict pickle (protocol 2)", torch_state_pickle(), "model_weights.pickle"),
        ("numpy array pickle, protocol 2", numpy_pickle(2), "model_weights.pickle"),
        ("numpy array pickle, protocol 4", numpy_pickle(4), "model_weights.pickle"),
        ("numpy array pickle, protocol 5", numpy_pickle(5), "model_weights.pickle"),
        ("ONNX ModelProto from pytorch", onnx_model(), "model_weights.onnx"),
        ("ONNX ModelProto without producer, ir_version 10", onnx_model(producer=None, ir_version=10), "model_weights.onnx"),
    ]
    for label, data, kind in files:
        c.append(case(f"weights: {label}", body_base64=data, kinds=[kind],
                      extra={"policies": ["dlp.body.model-weights"], "escalation": "ml-security",
                             "facts": {"dlp": {"model_weights": True}}}))
    for label, data, kind in files[::3]:
        blob = data + bytes(range(256)) * 2
        c.append(case(f"weights: {label}, base64 inside JSON",
                      json.dumps({"Name": "model.bin", "Body": base64.b64encode(blob).decode()}), [kind]))
    blob = gguf(3)
    c.append(case("weights: GGUF as a data: URL with escaped slashes",
                  json.dumps({"file": "data:application/octet-stream;base64," + base64.b64encode(blob).decode()}).replace("/", "\\/"),
                  ["model_weights.gguf"]))
    c.append(case("weights: NumPy url-safe base64 inside JSON",
                  json.dumps({"blob": base64.urlsafe_b64encode(npy("<f4", (4, 4), TENSOR)).decode()}), ["model_weights.npy"]))
    c.append(case("weights: a multipart upload carrying a GGUF file",
                  body_base64=b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"m.gguf\"\r\n\r\n" + gguf(3) + b"\r\n--b--\r\n",
                  kinds=["model_weights.gguf"]))
    rng = random.Random(9)
    floats = [round(rng.gauss(0, 0.05), 6) for _ in range(300)]
    c.append(case("weights: a JSON array of 300 floats", json.dumps({"embedding": floats}), ["model_weights.float_array"]))
    matrix = [[round(rng.gauss(0, 0.05), 5) for _ in range(24)] for _ in range(16)]
    c.append(case("weights: a nested JSON matrix of floats (16x24)", json.dumps({"w": matrix}), ["model_weights.float_array"]))
    raw = struct.pack("<384f", *[rng.gauss(0, 0.05) for _ in range(384)])
    c.append(case("weights: a raw float32 tensor as base64 (an embedding)", json.dumps({"embedding": base64.b64encode(raw).decode()}),
                  ["model_weights.float_array"]))
    # Near misses.
    c.append(case("weights: an ordinary zip (a document) is not weights", body_base64=docx_zip(), kinds=[]))
    c.append(case("weights: a plain pickle of a dict is not weights", body_base64=pickle.dumps({"a": 1, "b": [1, 2]}, protocol=4), kinds=[]))
    c.append(case("weights: the word GGUF in text is not weights", "GGUF is a file format; so is PK zip", []))
    g = bytearray(gguf(3))
    g[4] = 9
    c.append(case("weights: GGUF with version 9 is not weights", body_base64=bytes(g), kinds=[]))
    n = bytearray(npy("<f4", (4, 4), TENSOR))
    n[6] = 7
    c.append(case("weights: .npy with version 7 is not weights", body_base64=bytes(n), kinds=[]))
    c.append(case("weights: an HDF5 signature at offset 700 is not a file", body_base64=bytes(700) + hdf5_v0(), kinds=[]))
    s = bytearray(safetensors({"w": ("F32", [4, 4], TENSOR)}))
    s[9] = ord("X")
    c.append(case("weights: a safetensors header that is not JSON", body_base64=bytes(s), kinds=[]))
    c.append(case("weights: protobuf noise is not ONNX", body_base64=bytes([0x08, 0x01, 0x10, 0x02, 0x18, 0x03, 0x20, 0x04]), kinds=[]))
    noise = bytes(random.Random(3).getrandbits(8) for _ in range(3000))
    c.append(case("weights: base64 of random bytes is not weights", json.dumps({"Body": base64.b64encode(noise).decode()}), []))
    c.append(case("weights: a JSON array of 300 integers is not a tensor", json.dumps({"ids": list(range(300))}), []))
    c.append(case("weights: 100 floats are too few", json.dumps({"v": floats[:100]}), []))
    return c


# Redaction modes of the default bundle (policies/portcullis.toml [dlp.redaction]).
MODES = {"card": "mask", "iban": "mask", "email": "hash", "phone": "mask", "nhs_number": "drop", "es_nif": "hash"}


def redaction():
    """Bodies whose redacted form is written out by hand from the contract:
    mask = one `*` per byte; hash = `[kind:<16 hex of SHA-256>]`; drop =
    the JSON string holding it becomes empty (removed in text)."""
    c = []

    def r(name, body, kinds, redacted):
        c.append(case(name, body, kinds, extra={"redacted_body": redacted}))
    card = "4111 1111 1111 1111"
    r("redaction: a card inside a JSON string is masked byte for byte",
      f'{{"Name":"Ada","note":"paid by card {card} on file"}}', ["card"],
      f'{{"Name":"Ada","note":"paid by card {"*" * len(card)} on file"}}')
    r("redaction: an e-mail is replaced by its digest",
      '{"Email":"ada.lovelace@example.com"}', ["email"],
      f'{{"Email":"[email:{digest16("ada.lovelace@example.com")}]"}}')
    r("redaction: an NHS number is dropped (the string empties)",
      '{"Name":"Ada","NHS":"NHS number 943 476 5919"}', ["nhs_number"], '{"Name":"Ada","NHS":""}')
    r("redaction: a DNI is hashed", '{"Doc":"DNI 12345678Z"}', ["es_nif"], f'{{"Doc":"DNI [es_nif:{digest16("12345678Z")}]"}}')
    r("redaction: a card as a JSON number becomes a masked string",
      '{"pan": 4111111111111111, "n": 2}', ["card"], '{"pan": "****************", "n": 2}')
    r("redaction: the same e-mail twice, both hashed",
      '{"a":"ann@example.com","b":["cc ann@example.com"]}', ["email", "email"],
      f'{{"a":"[email:{digest16("ann@example.com")}]","b":["cc [email:{digest16("ann@example.com")}]"]}}')
    iban = "GB82 WEST 1234 5698 7654 32"
    r("redaction: an IBAN in pretty JSON keeps the layout",
      f'{{\n  "iban": "{iban}",\n  "ok": true\n}}', ["iban"], f'{{\n  "iban": "{"*" * len(iban)}",\n  "ok": true\n}}')
    r("redaction: non-ASCII text around a phone survives",
      '{"note":"Zoë → +44 20 7946 0958 ✓"}', ["phone"], '{"note":"Zoë → **************** ✓"}')
    r("redaction: an escape inside a finding's string is kept whole",
      '{"note":"card\\n4111111111111111\\tend"}', ["card"], '{"note":"card\\n****************\\tend"}')
    r("redaction: a text body is masked in place",
      "mail ann@example.com, card 4111111111111111.", ["email", "card"],
      f"mail [email:{digest16('ann@example.com')}], card ****************.")
    r("redaction: a dropped NHS number leaves the text around it", "patient 9434765919 seen", ["nhs_number"], "patient  seen")
    r("redaction: a record with every PII kind",
      json.dumps({"Email": "bo@example.org", "Card": "5555555555554444", "Iban": "DE89370400440532013000",
                  "Tel": "+34 612 345 678", "Nif": "DNI 45678912" + NIF_LETTERS[45678912 % 23]}),
      ["email", "card", "iban", "phone", "es_nif"],
      json.dumps({"Email": f"[email:{digest16('bo@example.org')}]", "Card": "*" * 16, "Iban": "*" * 22,
                  "Tel": "*" * 15, "Nif": f"DNI [es_nif:{digest16('45678912' + NIF_LETTERS[45678912 % 23])}]"}))
    return c


def minimise():
    c = []

    def m(name, flow, fields, dropped, module=None, outcome=None):
        ctx = {"ip": "203.0.113.7", "flow": flow, "fields": fields}
        if module:
            ctx["module"] = module
        expect = {"dropped_fields": dropped, "outcome": outcome or ("deny" if dropped else "allow")}
        c.append({"name": name, "request": {"context": ctx}, "expect": expect})
    m("minimise: marketing-sync keeps Id, Name, Email, Industry", "marketing-sync",
      ["Id", "Name", "Email", "Industry"], [])
    m("minimise: marketing-sync drops Phone and MobilePhone", "marketing-sync",
      ["Id", "Email", "Phone", "MobilePhone"], ["Phone", "MobilePhone"])
    m("minimise: field names compare case-insensitively", "marketing-sync", ["ID", "email", "BirthDate"], ["BirthDate"])
    m("minimise: support-sync allows only case fields", "support-sync",
      ["Id", "Subject", "Status", "Email", "Description"], ["Email", "Description"])
    m("minimise: support-sync from Service Cloud also allows Priority and the case owner", "support-sync",
      ["Id", "Subject", "Priority", "Case_Owner__c", "Email"], ["Email"], module="service_cloud")
    m("minimise: the module list replaces the flow's (Sales Cloud has none: flow list)", "support-sync",
      ["Id", "Priority"], ["Priority"], module="sales_cloud")
    m("minimise: billing-sync allows a prefix glob and a related record's field", "billing-sync",
      ["Id", "BillingCity", "BillingPostalCode", "Account.Name", "Account.Phone", "ShippingCity"],
      ["Account.Phone", "ShippingCity"])
    c.append({"name": "minimise: an unknown flow is an error naming the field",
              "request": {"context": {"ip": "203.0.113.7", "flow": "exfil", "fields": ["Id"]}},
              "expect": {"outcome": "deny", "error_kind": "invalid-request", "error_field": "context.flow"}})
    return c


def streaming():
    """Bodies as chunks, each match cut by an edge; offsets are absolute."""
    c = []

    def s(name, parts, spans, redacted=None):
        body = "".join(parts)
        kinds = [k for k, _, _ in spans]
        for k, o, n in spans:
            assert 0 <= o and o + n <= len(body.encode()), (name, k)
        extra = {"redacted_body": redacted} if redacted is not None else None
        c.append(case(name, chunks=parts, kinds=kinds, spans=spans, extra=extra))
    card = "4111 1111 1111 1111"
    pre = '{"note":"paid by card '
    s("streaming: a card cut in the middle by a chunk edge",
      [pre + card[:7], card[7:] + ' on file"}'], [("card", len(pre), len(card))],
      pre + "*" * len(card) + ' on file"}')
    filler = "lorem ipsum dolor sit amet " * 400
    body_pre = '{"filler":"' + filler + '","owner":"'
    email = "ada.lovelace@example.com"
    s("streaming: an e-mail cut at its @, after 10 kB",
      [body_pre + email[:12], email[12:] + '"}'], [("email", len(body_pre), len(email))],
      body_pre + f"[email:{digest16(email)}]" + '"}')
    token = jwt_hs256({"sub": "005xx000001Svq", "exp": 1795000000})
    head = filler + "Authorization: Bearer "
    s("streaming: a JWT across three chunks",
      [head + token[:10], token[10:40], token[40:] + "\n"], [("jwt", len(head), len(token))])
    iban = "GB82 WEST 1234 5698 7654 32"
    pre = filler + "IBAN: "
    s("streaming: an IBAN cut inside a group, one byte per chunk at the edge",
      [pre + iban[:9]] + list(iban[9:14]) + [iban[14:] + "."], [("iban", len(pre), len(iban))])
    key = pem("EC PRIVATE KEY", "stream")
    s("streaming: a private key block across chunks", [filler + key[:50], key[50:300], key[300:] + "\n"],
      [("private_key", len(filler), len(key))])
    blob = base64.b64encode(gguf(3) + bytes(4096)).decode()
    pre = filler + '{"Body":"'
    s("streaming: a base64 GGUF file spread over many chunks",
      [pre + blob[:100]] + [blob[i:i + 1000] for i in range(100, len(blob), 1000)] + ['"}'],
      [("model_weights.gguf", len(pre), len(blob))])
    s("streaming: a match right at the edge (chunk ends just before it)",
      [filler + "card ", card + " ok"], [("card", len(filler) + 5, len(card))])
    return c


# ---------------------------------------------------------------- output --

HEADER = """# GENERATED by scripts/gen_dlp_cases.py: do not edit; run
#   python3 scripts/gen_dlp_cases.py
# {what}
"""


def render(what, cases, defaults=DEFAULTS):
    names = set()
    out = [HEADER.format(what=what), "defaults: " + json.dumps(defaults, ensure_ascii=False), "", "cases:"]
    for c in cases:
        assert c["name"] not in names, c["name"]
        names.add(c["name"])
        out.append("  - name: " + json.dumps(c["name"], ensure_ascii=False))
        out.append("    request: " + json.dumps(c["request"], ensure_ascii=False))
        out.append("    expect: " + json.dumps(c["expect"], ensure_ascii=False))
    return "\n".join(out) + "\n"


FILES = {
    "detectors.yaml": ("Positive and negative samples per detector (the default bundle's\n"
                       "# min_confidence 50: values below it are not findings).", detectors),
    "weights.yaml": ("Weight formats built the way the real tools write them; near misses.", weights),
    "redaction.yaml": ("Redacted bodies byte for byte, per the manifest's modes.", redaction),
    "minimise.yaml": ("Field minimisation per flow and module.", minimise),
    "streaming.yaml": ("Bodies given in chunks (`body_chunks`): matches across chunk edges.", streaming),
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, (what, build) in FILES.items():
        text = render(what, build())
        path = os.path.join(OUT, name)
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    current = f.read()
            except FileNotFoundError:
                current = None
            if current != text:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print(f"stale: {', '.join(stale)} under policies/tests/dlp; run python3 scripts/gen_dlp_cases.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
