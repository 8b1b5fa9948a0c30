//! Model weights and artefacts, recognised by their real header layouts.

use super::config::Kind;
use aho_corasick::AhoCorasick;
use serde_json::{Map, Value};

/// A recognised weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) kind: Kind,
    pub(crate) confidence: u8,
}

fn hit(kind: Kind, confidence: u8) -> Option<Hit> {
    Some(Hit { kind, confidence })
}

/// How far into a file the pickle and ONNX marker strings are looked for.
const MARKER_SPAN: usize = 4096;

/// Strings a torch / numpy / sklearn pickle names in its first opcodes
/// (GLOBAL `c<module>\n<name>\n` up to protocol 3, SHORT_BINUNICODE +
/// STACK_GLOBAL from 4); the magic number that the legacy (pre-1.6,
/// `_use_new_zipfile_serialization=False`) `torch.save` pickles first
/// (LONG1 of 0x1950a86a20f9469cfc6c); and `onnx` (last) for ONNX files.
const MARKERS: &[&[u8]] = &[
    b"torch._utils",
    b"_rebuild_tensor",
    b"_rebuild_parameter",
    b"torch.FloatStorage",
    b"torch.HalfStorage",
    b"torch.BFloat16Storage",
    b"ctorch\n",
    b"numpy.core.",
    b"numpy._core.",
    b"cnumpy\n",
    b"numpy\ndtype",
    b"sklearn.",
    b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19",
    b"onnx",
];

/// The marker automaton.
pub(crate) struct Markers {
    ac: AhoCorasick,
}

impl Markers {
    pub(crate) fn new() -> Result<Self, String> {
        AhoCorasick::new(MARKERS)
            .map(|ac| Markers { ac })
            .map_err(|e| format!("dlp weight markers: {e}"))
    }

    fn head(b: &[u8]) -> &[u8] {
        b.get(..MARKER_SPAN).unwrap_or(b)
    }

    fn pickle(&self, b: &[u8]) -> bool {
        let onnx = MARKERS.len() - 1;
        self.ac
            .find_iter(Self::head(b))
            .any(|m| m.pattern().as_usize() != onnx)
    }

    fn onnx(&self, b: &[u8]) -> bool {
        let onnx = MARKERS.len() - 1;
        self.ac
            .find_iter(Self::head(b))
            .any(|m| m.pattern().as_usize() == onnx)
    }
}

fn u16_le(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(usize::from(u16::from_le_bytes(bytes)))
}

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn u64_le(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Any format whose file starts at `b[0]`. `prefix`: `b` may be only the
/// start of the file (decoded from a base64 prefix), so headers may be cut.
pub(crate) fn detect_start(markers: &Markers, b: &[u8], prefix: bool) -> Option<Hit> {
    let first = *b.first()?;
    let found = match first {
        b'G' => gguf(b),
        0x93 => npy(b),
        0x89 => hdf5(b, 0),
        b'P' => zip_local(b).then_some(Hit {
            kind: Kind::WPytorchZip,
            confidence: 95,
        }),
        0x80 => pickle(markers, b),
        0x08 => onnx(markers, b),
        _ => None,
    };
    found
        .or_else(|| safetensors(b))
        .or_else(|| if prefix { hdf5_user_block(b) } else { None })
}

/// safetensors: u64 LE header length N, then N bytes of JSON whose entries
/// are tensors (`dtype`, `shape`, `data_offsets`) or `__metadata__`.
pub(crate) fn safetensors(b: &[u8]) -> Option<Hit> {
    let n = u64_le(b, 0)?;
    if !(2..=100_000_000).contains(&n) || b.get(8) != Some(&b'{') {
        return None;
    }
    let n = usize::try_from(n).ok()?;
    match b.get(8..8 + n) {
        Some(header) => {
            let map: Map<String, Value> = serde_json::from_slice(header).ok()?;
            let mut tensors = 0;
            for (name, entry) in &map {
                if name == "__metadata__" {
                    continue;
                }
                let ok = entry.get("dtype").is_some_and(Value::is_string)
                    && entry
                        .get("shape")
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().all(Value::is_u64))
                    && entry
                        .get("data_offsets")
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.len() == 2 && a.iter().all(Value::is_u64));
                if !ok {
                    return None;
                }
                tensors += 1;
            }
            (tensors > 0 || map.contains_key("__metadata__")).then_some(Hit {
                kind: Kind::WSafetensors,
                confidence: 99,
            })
        }
        None => {
            let header = b.get(8..)?;
            let text = std::str::from_utf8(header.get(..header.len().min(4096))?)
                .or_else(|e| std::str::from_utf8(&header[..e.valid_up_to()]))
                .ok()?;
            if !text.starts_with("{\"") && !text.starts_with("{ \"") {
                return None;
            }
            let tensor = text.contains("\"dtype\"") && text.contains("\"data_offsets\"");
            (tensor || text.contains("\"__metadata__\"")).then_some(Hit {
                kind: Kind::WSafetensors,
                confidence: 90,
            })
        }
    }
}

/// GGUF: magic, u32 version 1..=3, then tensor and metadata counts
/// (u32 in v1, u64 from v2). Little-endian, or big-endian as llama.cpp
/// writes for s390x (v2 and v3 only).
pub(crate) fn gguf(b: &[u8]) -> Option<Hit> {
    if b.get(..4)? != b"GGUF" {
        return None;
    }
    let version = u32_le(b, 4)?;
    let big = matches!(version.swap_bytes(), 2 | 3);
    if !(1..=3).contains(&version) && !big {
        return None;
    }
    let counts = if big {
        u64_le(b, 8)
            .zip(u64_le(b, 16))
            .map(|(t, k)| (t.swap_bytes(), k.swap_bytes()))
    } else if version == 1 {
        u32_le(b, 8)
            .zip(u32_le(b, 12))
            .map(|(t, k)| (u64::from(t), u64::from(k)))
    } else {
        u64_le(b, 8).zip(u64_le(b, 16))
    };
    match counts {
        None => hit(Kind::WGguf, 90),
        Some((tensors, kvs)) if tensors <= 1 << 24 && kvs <= 1 << 20 => hit(Kind::WGguf, 97),
        Some(_) => None,
    }
}

/// NumPy `.npy`: `\x93NUMPY`, version 1..=3 . 0, header length (u16 LE in
/// v1, u32 LE after), header a dict literal with `'descr'`.
pub(crate) fn npy(b: &[u8]) -> Option<Hit> {
    if b.get(..6)? != b"\x93NUMPY" || b.get(7) != Some(&0) {
        return None;
    }
    let (len, start) = match b.get(6)? {
        1 => (u16_le(b, 8)?, 10),
        2 | 3 => (usize::try_from(u32_le(b, 8)?).ok()?, 12),
        _ => return None,
    };
    if len < 10 {
        return None;
    }
    let header = b.get(start..)?;
    let header = header.get(..len.min(header.len()).min(4096))?;
    (header.first() == Some(&b'{') && header.windows(7).any(|w| w == b"'descr'")).then_some(Hit {
        kind: Kind::WNpy,
        confidence: 99,
    })
}

const HDF5: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// HDF5 signature at `b[0]`, found at file offset `at` (0 or 512·2ⁿ),
/// superblock version 0..=3.
pub(crate) fn hdf5(b: &[u8], at: usize) -> Option<Hit> {
    if b.get(..8)? != HDF5 {
        return None;
    }
    if let Some(version) = b.get(8)
        && *version > 3
    {
        return None;
    }
    let confidence = if at == 0 { 95 } else { 90 };
    hit(Kind::WHdf5, confidence)
}

/// Whether an HDF5 signature may sit at file offset `at`.
pub(crate) fn hdf5_offset_ok(at: usize) -> bool {
    at == 0 || (at >= 512 && at.is_power_of_two())
}

fn hdf5_user_block(b: &[u8]) -> Option<Hit> {
    let mut at = 512usize;
    while at + 8 <= b.len() {
        if let Some(found) = b.get(at..).and_then(|rest| hdf5(rest, at)) {
            return Some(found);
        }
        at = at.checked_mul(2)?;
    }
    None
}

/// A PyTorch archive member name: `…/data.pkl`, `…/data/<n>` storages,
/// TorchScript `constants.pkl` and `code/__torch__`.
fn torch_member(name: &[u8]) -> bool {
    if name.ends_with(b"data.pkl") || name.ends_with(b"constants.pkl") {
        return true;
    }
    if name.windows(14).any(|w| w == b"code/__torch__") {
        return true;
    }
    if let Some(pos) = name.windows(6).rposition(|w| w == b"/data/") {
        let rest = &name[pos + 6..];
        return !rest.is_empty() && rest.iter().all(u8::is_ascii_digit);
    }
    false
}

/// A zip local file header (`PK\3\4`) of a PyTorch archive member.
pub(crate) fn zip_local(b: &[u8]) -> bool {
    if b.get(..4) != Some(b"PK\x03\x04") {
        return false;
    }
    let Some(len) = u16_le(b, 26) else {
        return false;
    };
    b.get(30..30 + len).is_some_and(torch_member)
}

/// A zip central directory entry (`PK\1\2`) of a PyTorch archive member.
pub(crate) fn zip_central(b: &[u8]) -> bool {
    if b.get(..4) != Some(b"PK\x01\x02") {
        return false;
    }
    let Some(len) = u16_le(b, 28) else {
        return false;
    };
    b.get(46..46 + len).is_some_and(torch_member)
}

/// Legacy pickle: PROTO 2..=5 at the start and torch/numpy globals early.
pub(crate) fn pickle(markers: &Markers, b: &[u8]) -> Option<Hit> {
    if b.first() != Some(&0x80) || !(2..=5).contains(b.get(1)?) {
        return None;
    }
    markers.pickle(b).then_some(Hit {
        kind: Kind::WPickle,
        confidence: 90,
    })
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn printable(s: &[u8]) -> bool {
    s.iter()
        .all(|&c| (0x20..0x7f).contains(&c) || c == b'\n' || c == b'\t')
}

/// ONNX `ModelProto`: field 1 `ir_version` (tag 0x08) first, then only
/// known fields with sane wire types and lengths, up to a `graph` (7)
/// whose first bytes are a graph field, or an `opset_import` (8).
pub(crate) fn onnx(markers: &Markers, b: &[u8]) -> Option<Hit> {
    let mut pos = 0;
    if *b.first()? != 0x08 {
        return None;
    }
    pos += 1;
    let ir = varint(b, &mut pos)?;
    if !(1..=15).contains(&ir) {
        return None;
    }
    let mut seen = false;
    for _ in 0..32 {
        if pos >= b.len() {
            break;
        }
        let key = varint(b, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        match (field, wire) {
            (5, 0) => {
                varint(b, &mut pos)?;
            }
            (2..=4 | 6 | 7 | 8 | 14 | 20 | 25, 2) => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                match field {
                    2..=4 if len > 256 || !printable(b.get(pos..end)?) => return None,
                    7 => {
                        let tag = *b.get(pos)?;
                        let (gf, gw) = (tag >> 3, tag & 7);
                        if len < 2 || gw != 2 || !matches!(gf, 1..=5 | 10..=16) {
                            return None;
                        }
                        seen = true;
                        break;
                    }
                    8 => {
                        if len > 256 || !matches!(b.get(pos), Some(0x0a | 0x10)) {
                            return None;
                        }
                        b.get(pos..end)?;
                        seen = true;
                    }
                    _ => {}
                }
                pos = end;
            }
            _ => return None,
        }
    }
    if !seen {
        return None;
    }
    let confidence = if markers.onnx(b) { 95 } else { 85 };
    hit(Kind::WOnnx, confidence)
}

/// Whether `b` reads as a raw little-endian float32 tensor: of its first
/// `max` values (at least 3, and at least 128 unless `max` is smaller),
/// 95% are zero or of a magnitude weights have (1e-6..=1e4), not more than
/// half are zero, and they are not all one value. Random or compressed
/// bytes pass about one value in eight; text far fewer.
pub(crate) fn f32_plausible(b: &[u8], max: usize) -> bool {
    let values: Vec<f32> = b
        .chunks_exact(4)
        .take(max)
        .filter_map(|c| <[u8; 4]>::try_from(c).ok())
        .map(f32::from_le_bytes)
        .collect();
    let n = values.len();
    if n < 3 || (n < 128 && n < max) {
        return false;
    }
    let zeros = values.iter().filter(|v| **v == 0.0).count();
    let plausible = values
        .iter()
        .filter(|v| **v == 0.0 || (1e-6..=1e4).contains(&v.abs()))
        .count();
    let distinct = values
        .iter()
        .any(|v| v.to_bits() != values.first().map_or(0, |f| f.to_bits()));
    plausible * 20 >= n * 19 && zeros * 2 <= n && distinct
}

#[cfg(test)]
pub(crate) mod build {
    //! Weight-file headers built byte by byte from the real layouts.

    /// safetensors with one F32 tensor `w` of shape [2, 2].
    pub fn safetensors() -> Vec<u8> {
        let header = br#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"format":"pt"}}"#;
        let mut header = header.to_vec();
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&[0u8; 16]);
        out
    }

    /// GGUF v3 with 2 tensors and 3 metadata pairs (the first key follows).
    pub fn gguf() -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&2u64.to_le_bytes());
        out.extend_from_slice(&3u64.to_le_bytes());
        let key = b"general.architecture";
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&8u32.to_le_bytes());
        out
    }

    /// NumPy v1.0 `<f4` array of shape (3,).
    pub fn npy() -> Vec<u8> {
        let mut header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }".to_vec();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&[0u8; 12]);
        out
    }

    /// HDF5 superblock v0, optionally after a user block of `user` bytes.
    pub fn hdf5(user: usize) -> Vec<u8> {
        let mut out = vec![0u8; user];
        out.extend_from_slice(b"\x89HDF\r\n\x1a\n");
        out.extend_from_slice(&[0, 0, 0, 0, 0, 8, 8, 0, 4, 0, 16, 0]);
        out.extend_from_slice(&[0u8; 64]);
        out
    }

    fn zip_local(name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = b"PK\x03\x04".to_vec();
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(data);
        out
    }

    /// A PyTorch zip archive: `archive/data.pkl`, one storage, version,
    /// and the central directory entry for `archive/data.pkl`.
    pub fn pytorch_zip() -> Vec<u8> {
        let mut out = zip_local(b"archive/data.pkl", &pickle());
        out.extend(zip_local(b"archive/data/0", &[0u8; 16]));
        out.extend(zip_local(b"archive/version", b"3\n"));
        out.extend_from_slice(b"PK\x01\x02");
        out.extend_from_slice(&[0u8; 24]);
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(b"archive/data.pkl");
        out
    }

    /// A zip whose only member is a central directory naming data.pkl.
    pub fn zip_central_only() -> Vec<u8> {
        let mut out = b"PK\x01\x02".to_vec();
        out.extend_from_slice(&[0u8; 24]);
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(b"archive/data.pkl");
        out
    }

    /// A protocol-2 pickle of a torch state dict (GLOBAL opcodes).
    pub fn pickle() -> Vec<u8> {
        let mut out = b"\x80\x02".to_vec();
        out.extend_from_slice(
            b"ccollections\nOrderedDict\nq\x00)Rq\x01X\x06\x00\x00\x00weightq\x02",
        );
        out.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05");
        out.extend_from_slice(b"X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x04tq\x08QK\x00K\x04\x85q\tK\x01\x85q\n\x89tq\x0bRq\x0cs.");
        out
    }

    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }

    /// An ONNX ModelProto: ir_version 8, producer, graph with one node,
    /// opset_import ai.onnx 17.
    pub fn onnx() -> Vec<u8> {
        let mut out = vec![0x08, 0x08];
        field(&mut out, 0x12, b"pytorch");
        field(&mut out, 0x1a, b"2.1.0");
        let mut node = Vec::new();
        field(&mut node, 0x0a, b"x");
        field(&mut node, 0x12, b"y");
        field(&mut node, 0x22, b"Relu");
        let mut graph = Vec::new();
        field(&mut graph, 0x0a, &node);
        field(&mut graph, 0x12, b"main_graph");
        field(&mut out, 0x3a, &graph);
        let mut opset = Vec::new();
        field(&mut opset, 0x0a, b"ai.onnx");
        opset.extend_from_slice(&[0x10, 17]);
        field(&mut out, 0x42, &opset);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers() -> Markers {
        Markers::new().unwrap()
    }

    fn kind(b: &[u8]) -> Option<Kind> {
        detect_start(&markers(), b, false).map(|h| h.kind)
    }

    #[test]
    fn each_format_from_its_header() {
        assert_eq!(kind(&build::safetensors()), Some(Kind::WSafetensors));
        assert_eq!(kind(&build::gguf()), Some(Kind::WGguf));
        assert_eq!(kind(&build::npy()), Some(Kind::WNpy));
        assert_eq!(kind(&build::hdf5(0)), Some(Kind::WHdf5));
        assert_eq!(kind(&build::pytorch_zip()), Some(Kind::WPytorchZip));
        assert_eq!(kind(&build::pickle()), Some(Kind::WPickle));
        assert_eq!(kind(&build::onnx()), Some(Kind::WOnnx));
        assert!(zip_central(&build::zip_central_only()));
        assert_eq!(
            detect_start(&markers(), &build::onnx(), false).map(|h| h.confidence),
            Some(95)
        );
    }

    #[test]
    fn prefixes_and_user_blocks() {
        let st = build::safetensors();
        let hit = detect_start(&markers(), &st[..70], true).unwrap();
        assert_eq!((hit.kind, hit.confidence), (Kind::WSafetensors, 90));
        let h5 = build::hdf5(512);
        assert_eq!(
            detect_start(&markers(), &h5, true).map(|h| h.kind),
            Some(Kind::WHdf5)
        );
        assert!(hdf5_offset_ok(0) && hdf5_offset_ok(1024) && !hdf5_offset_ok(700));
        assert!(!hdf5_offset_ok(256));
    }

    #[test]
    fn near_misses_are_not_weights() {
        let mut g = build::gguf();
        g[4] = 9;
        assert_eq!(kind(&g), None);
        assert_eq!(kind(b"GGUF is a format"), None);
        let mut n = build::npy();
        n[6] = 7;
        assert_eq!(kind(&n), None);
        // A plain pickle (no torch/numpy globals) is not weights.
        assert_eq!(
            kind(b"\x80\x04\x95\x10\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."),
            None
        );
        // A zip of documents is not a PyTorch archive.
        let mut docx = b"PK\x03\x04".to_vec();
        docx.extend_from_slice(&[0u8; 22]);
        docx.extend_from_slice(&19u16.to_le_bytes());
        docx.extend_from_slice(&0u16.to_le_bytes());
        docx.extend_from_slice(b"word/data/document1");
        assert_eq!(kind(&docx), None);
        // Protobuf-looking noise.
        assert_eq!(kind(&[0x08, 0x01, 0x10, 0x02, 0x18, 0x03]), None);
        assert_eq!(kind(&[0x08, 0x07, 0x12, 0x03, 0x00, 0xff, 0x01]), None);
        let mut st = build::safetensors();
        st[8 + 5] = b'X';
        assert_eq!(kind(&st), None);
        assert_eq!(kind(b"{\"json\": true}"), None);
    }
}
