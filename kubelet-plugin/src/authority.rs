//! `:authority` normalisation in front of tonic on the kubelet-facing unix sockets.
//!
//! **Why.** The kubelet dials a plugin socket with the socket *path* as its gRPC target and sets no
//! authority (`pkg/kubelet/pluginmanager/operationexecutor/operation_generator.go`, func `dial`;
//! `pkg/kubelet/cm/dra/plugin/dra_plugin.go` for the DRA socket), so grpc-go sends the path as
//! `:authority`; grpc-core (Python `grpcio`) sends it percent-encoded (`tmp%2Fx.sock`). The `h2`
//! server under tonic parses `:authority` with `http::uri::Authority` and resets the stream with
//! PROTOCOL_ERROR when that fails, before any handler runs (h2 0.4 `src/server.rs`,
//! `convert_poll_message`; hyperium/h2 PR #487 is unmerged, tonic issues #243 and #1876 show a
//! real kubelet failing `GetInfo`). Without this layer the plugin cannot register.
//!
//! **What.** [`AuthorityRewriter`] is a sans-I/O filter over the client→server byte stream of one
//! HTTP/2 connection. It checks the connection preface (RFC 9113 §3.4), splits the stream into
//! frames (§4.1) and forwards every frame byte for byte, except header blocks: a HEADERS frame
//! and its CONTINUATION frames (§6.2, §6.10) are collected, decoded with the connection's HPACK
//! state (RFC 7541, one decoder per connection, as the client's encoder expects) and re-encoded
//! without the dynamic table (every field a "literal header field without indexing", §6.2.2), with
//! an `:authority` that `http` refuses replaced by `localhost`. Padding is dropped; the PRIORITY
//! fields and END_STREAM are kept. Because the re-encoded blocks never touch h2's dynamic table,
//! h2's decoder stays in step whatever the client's encoder does. The server→client direction is
//! not touched. A stream that does not start with the preface is passed through unchanged (h2
//! then answers it as it would). [`AuthorityFix`] wraps a socket with it for tonic.
//!
//! **Cost.** Per call: one HPACK decode and re-encode of the request's header block (a few
//! hundred bytes) and one extra copy of every byte the client sends (`multinic bench` row
//! `grpc-authority`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface, RFC 9113 §3.4.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// What a refused `:authority` becomes.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";
/// Frame header length, RFC 9113 §4.1.
pub const FRAME_HEADER_LEN: usize = 9;
/// Frame types and flags, RFC 9113 §6.2 and §6.10.
pub const FRAME_HEADERS: u8 = 0x1;
pub const FRAME_CONTINUATION: u8 = 0x9;
pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;
/// Largest frame payload we emit: the initial SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2), which
/// every peer accepts and which tonic's h2 server keeps.
pub const MAX_EMITTED_FRAME: usize = 16_384;
/// Largest compressed header block we buffer. gRPC request headers are a few hundred bytes; a
/// client that sends more is cut off instead of growing our memory.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// The dynamic table size the client's encoder may use: SETTINGS_HEADER_TABLE_SIZE's initial
/// value (RFC 9113 §6.5.2), which tonic's h2 server never changes.
pub const HPACK_TABLE_SIZE: usize = 4096;
const PRIORITY_LEN: usize = 5;

/// Why a connection was cut. Each is a connection error of RFC 9113 §5.4.1; h2 would close the
/// connection for the same input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("HTTP/2 frame on stream {stream} while the header block of stream {expected} is open (RFC 9113 §6.10)")]
    InterruptedHeaderBlock { stream: u32, expected: u32 },
    #[error("HTTP/2 CONTINUATION frame on stream {stream} with no open header block (RFC 9113 §6.10)")]
    StrayContinuation { stream: u32 },
    #[error("HTTP/2 HEADERS frame on stream {stream}: padding or priority longer than the frame")]
    BadHeadersFrame { stream: u32 },
    #[error("HTTP/2 header block on stream {stream} exceeds {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge { stream: u32 },
    #[error("HPACK decoding of the header block on stream {stream} failed: {reason}")]
    Hpack { stream: u32, reason: String },
    #[error("the connection already failed: {0}")]
    Failed(Box<RewriteError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Checking the first bytes against [`PREFACE`].
    Preface,
    /// At a frame boundary, waiting for a frame header.
    FrameHeader,
    /// Forwarding this many more payload bytes of a frame as they are.
    Forward(usize),
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    HeaderPayload {
        frame_type: u8,
        flags: u8,
        stream: u32,
        len: usize,
    },
    /// Not HTTP/2 with prior knowledge: everything passes through.
    PassThrough,
}

/// A header block that has not seen END_HEADERS yet.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    fragment: Vec<u8>,
}

/// The client→server filter of one connection. Feed it bytes as they arrive; what it is ready to
/// forward is in [`AuthorityRewriter::output`].
pub struct AuthorityRewriter {
    mode: Mode,
    input: BytesMut,
    output: BytesMut,
    open: Option<OpenBlock>,
    decoder: loona_hpack::Decoder<'static>,
    failed: Option<RewriteError>,
    rewritten: u64,
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for AuthorityRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityRewriter")
            .field("mode", &self.mode)
            .field("buffered", &self.input.len())
            .field("output", &self.output.len())
            .field("rewritten", &self.rewritten)
            .finish()
    }
}

/// True when h2 accepts `value` as `:authority` (the check h2 makes).
pub fn authority_is_accepted(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

impl AuthorityRewriter {
    pub fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        Self {
            mode: Mode::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            open: None,
            decoder,
            failed: None,
            rewritten: 0,
        }
    }

    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Bytes ready to be forwarded to the server.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Drops the first `n` bytes of [`AuthorityRewriter::output`] (they were forwarded).
    pub fn consume(&mut self, n: usize) {
        self.output.advance(n.min(self.output.len()));
    }

    /// Takes everything that is ready to be forwarded.
    pub fn take_output(&mut self) -> BytesMut {
        self.output.split()
    }

    /// Processes the next bytes the client sent. After an error the connection must be closed;
    /// every later call fails too.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), RewriteError> {
        if let Some(error) = &self.failed {
            return Err(RewriteError::Failed(Box::new(error.clone())));
        }
        self.input.extend_from_slice(bytes);
        let result = self.process();
        if let Err(error) = &result {
            self.failed = Some(error.clone());
            self.input.clear();
        }
        result
    }

    fn process(&mut self) -> Result<(), RewriteError> {
        loop {
            match self.mode {
                Mode::PassThrough => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::PassThrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.forward(PREFACE.len());
                    self.mode = Mode::FrameHeader;
                }
                Mode::Forward(0) => self.mode = Mode::FrameHeader,
                Mode::Forward(left) => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let n = left.min(self.input.len());
                    self.forward(n);
                    self.mode = Mode::Forward(left - n);
                }
                Mode::FrameHeader => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let h = &self.input[..FRAME_HEADER_LEN];
                    let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    let (frame_type, flags) = (h[3], h[4]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    if let Some(open) = &self.open
                        && (frame_type != FRAME_CONTINUATION || stream != open.stream)
                    {
                        return Err(RewriteError::InterruptedHeaderBlock {
                            stream,
                            expected: open.stream,
                        });
                    }
                    match frame_type {
                        FRAME_HEADERS | FRAME_CONTINUATION => {
                            if frame_type == FRAME_CONTINUATION && self.open.is_none() {
                                return Err(RewriteError::StrayContinuation { stream });
                            }
                            let buffered = self.open.as_ref().map_or(0, |o| o.fragment.len());
                            if buffered + len > MAX_HEADER_BLOCK {
                                return Err(RewriteError::HeaderBlockTooLarge { stream });
                            }
                            self.input.advance(FRAME_HEADER_LEN);
                            self.mode = Mode::HeaderPayload {
                                frame_type,
                                flags,
                                stream,
                                len,
                            };
                        }
                        _ => {
                            self.forward(FRAME_HEADER_LEN);
                            self.mode = Mode::Forward(len);
                        }
                    }
                }
                Mode::HeaderPayload {
                    frame_type,
                    flags,
                    stream,
                    len,
                } => {
                    if self.input.len() < len {
                        return Ok(());
                    }
                    let payload = self.input.split_to(len);
                    self.header_frame(frame_type, flags, stream, &payload)?;
                    self.mode = Mode::FrameHeader;
                }
            }
        }
    }

    fn forward(&mut self, n: usize) {
        let bytes = self.input.split_to(n);
        self.output.unsplit(bytes);
    }

    fn header_frame(&mut self, frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<(), RewriteError> {
        let fragment = if frame_type == FRAME_HEADERS {
            let bad = || RewriteError::BadHeadersFrame { stream };
            let (pad, rest) = if flags & FLAG_PADDED != 0 {
                let (&pad, rest) = payload.split_first().ok_or_else(bad)?;
                (usize::from(pad), rest)
            } else {
                (0, payload)
            };
            let (priority, rest) = if flags & FLAG_PRIORITY != 0 {
                let (p, rest) = rest.split_at_checked(PRIORITY_LEN).ok_or_else(bad)?;
                let mut fields = [0; PRIORITY_LEN];
                fields.copy_from_slice(p);
                (Some(fields), rest)
            } else {
                (None, rest)
            };
            let fragment = rest
                .get(..rest.len().checked_sub(pad).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            self.open = Some(OpenBlock {
                stream,
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
                fragment: Vec::with_capacity(fragment.len()),
            });
            fragment
        } else {
            payload
        };
        let Some(open) = self.open.as_mut() else {
            return Err(RewriteError::StrayContinuation { stream });
        };
        open.fragment.extend_from_slice(fragment);
        if flags & FLAG_END_HEADERS == 0 {
            return Ok(());
        }
        let Some(block) = self.open.take() else {
            return Err(RewriteError::StrayContinuation { stream });
        };
        let encoded = self.reencode(&block)?;
        emit_header_block(&mut self.output, &block, &encoded);
        Ok(())
    }

    /// Decodes a complete header block with the connection's HPACK state and encodes it again as
    /// literals without indexing, replacing a refused `:authority`.
    fn reencode(&mut self, block: &OpenBlock) -> Result<Vec<u8>, RewriteError> {
        let mut out = Vec::with_capacity(block.fragment.len() + 64);
        let mut rewritten = 0;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value: &[u8] = if &*name == b":authority" && !authority_is_accepted(&value) {
                    rewritten += 1;
                    REPLACEMENT_AUTHORITY
                } else {
                    &value
                };
                encode_literal(&mut out, &name, value);
            })
            .map_err(|e| RewriteError::Hpack {
                stream: block.stream,
                reason: e.to_string(),
            })?;
        self.rewritten += rewritten;
        Ok(out)
    }
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix; `first` holds the bits above the prefix.
fn encode_integer(out: &mut Vec<u8>, value: usize, prefix_bits: u8, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// RFC 7541 §6.2.2 "literal header field without indexing, new name", both strings raw (H = 0).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    for s in [name, value] {
        encode_integer(out, s.len(), 7, 0);
        out.extend_from_slice(s);
    }
}

/// Writes `encoded` as one HEADERS frame and as many CONTINUATION frames as needed, none larger
/// than [`MAX_EMITTED_FRAME`].
fn emit_header_block(out: &mut BytesMut, block: &OpenBlock, encoded: &[u8]) {
    let first_room = MAX_EMITTED_FRAME - block.priority.map_or(0, |_| PRIORITY_LEN);
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = if block.end_stream { FLAG_END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    frame(out, FRAME_HEADERS, flags, block.stream, &[priority, first]);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_EMITTED_FRAME));
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        frame(out, FRAME_CONTINUATION, flags, block.stream, &[chunk]);
    }
}

fn frame(out: &mut BytesMut, frame_type: u8, flags: u8, stream: u32, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(FRAME_HEADER_LEN + len);
    out.put_uint(len as u64, 3);
    out.put_u8(frame_type);
    out.put_u8(flags);
    out.put_u32(stream);
    for p in parts {
        out.put_slice(p);
    }
}

/// A socket whose client→server bytes go through an [`AuthorityRewriter`]; writes are untouched.
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: AuthorityRewriter,
    scratch: Box<[u8]>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: AuthorityRewriter::new(),
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let ready = this.rewriter.output();
            if !ready.is_empty() || buf.remaining() == 0 {
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                this.rewriter.consume(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                continue;
            }
            let before = this.rewriter.rewritten();
            this.rewriter
                .feed(read.filled())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if before == 0 && this.rewriter.rewritten() > 0 {
                tracing::debug!("replaced a client :authority that h2 refuses by localhost");
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Test and fuzz support: the header blocks of a client→server stream, decoded.
pub mod inspect {
    use super::*;

    /// One decoded header block.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Block {
        pub stream: u32,
        pub end_stream: bool,
        pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    }

    /// Splits `stream` (starting with the preface) into frames and decodes every header block with
    /// one HPACK decoder, as h2 would. `None` when it is not a well-formed frame sequence.
    pub fn header_blocks(stream: &[u8]) -> Option<Vec<Block>> {
        let mut rest = stream.strip_prefix(PREFACE)?;
        let mut decoder = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut open: Option<(u32, bool, Vec<u8>)> = None;
        while !rest.is_empty() {
            let h = rest.get(..FRAME_HEADER_LEN)?;
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let (frame_type, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)?;
            rest = &rest[FRAME_HEADER_LEN + len..];
            let fragment = match frame_type {
                FRAME_HEADERS => {
                    let mut p = payload;
                    let mut pad = 0;
                    if flags & FLAG_PADDED != 0 {
                        pad = usize::from(*p.first()?);
                        p = &p[1..];
                    }
                    if flags & FLAG_PRIORITY != 0 {
                        p = p.get(PRIORITY_LEN..)?;
                    }
                    let p = p.get(..p.len().checked_sub(pad)?)?;
                    open = Some((stream, flags & FLAG_END_STREAM != 0, Vec::new()));
                    p
                }
                FRAME_CONTINUATION => payload,
                _ => continue,
            };
            let (s, _, buf) = open.as_mut()?;
            if *s != stream {
                return None;
            }
            buf.extend_from_slice(fragment);
            if flags & FLAG_END_HEADERS != 0 {
                let (stream, end_stream, buf) = open.take()?;
                let headers = decoder.decode(&buf).ok()?;
                blocks.push(Block {
                    stream,
                    end_stream,
                    headers,
                });
            }
        }
        Some(blocks)
    }

    /// A client frame (for building test streams).
    pub fn client_frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame(&mut out, frame_type, flags, stream, &[payload]);
        out.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::inspect::{client_frame, header_blocks};
    use super::*;

    const SOCKET: &[u8] = b"/var/lib/kubelet/plugins_registry/multinic.dev-reg.sock";
    const ENCODED: &[u8] = b"%2Fvar%2Flib%2Fkubelet%2Fplugins_registry%2Fmultinic.dev-reg.sock";

    fn request(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/pluginregistration.Registration/GetInfo"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
    }

    fn as_pairs(h: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
        h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect()
    }

    /// A client connection: preface, SETTINGS, then one HEADERS (END_HEADERS) + DATA per request,
    /// encoded with one stateful HPACK encoder (dynamic table on, as real clients do).
    fn connection(requests: &[Vec<(Vec<u8>, Vec<u8>)>]) -> Vec<u8> {
        let mut encoder = loona_hpack::Encoder::new();
        let mut out = PREFACE.to_vec();
        out.extend(client_frame(0x4, 0, 0, &[]));
        for (i, r) in requests.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            let block = encoder.encode(as_pairs(r));
            out.extend(client_frame(FRAME_HEADERS, FLAG_END_HEADERS, stream, &block));
            out.extend(client_frame(0x0, FLAG_END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        out
    }

    fn rewrite_all(input: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let mut r = AuthorityRewriter::new();
        r.feed(input)?;
        Ok(r.take_output().to_vec())
    }

    fn authorities(output: &[u8]) -> Vec<Vec<u8>> {
        header_blocks(output)
            .expect("well-formed output")
            .into_iter()
            .flat_map(|b| b.headers)
            .filter(|(n, _)| n == b":authority")
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn refused_authorities_become_localhost_and_accepted_ones_stay() {
        let cases: &[(&[u8], &[u8])] = &[
            (SOCKET, b"localhost"),
            (ENCODED, b"localhost"),
            (b"tmp%2Fsome.sock", b"localhost"),
            (b"", b"localhost"),
            (b"localhost", b"localhost"),
            (b"127.0.0.1:9000", b"127.0.0.1:9000"),
            (b"plugin.example", b"plugin.example"),
        ];
        for (sent, want) in cases {
            assert_eq!(
                authority_is_accepted(sent),
                sent == want,
                "{:?}",
                String::from_utf8_lossy(sent)
            );
            let out = rewrite_all(&connection(&[request(sent)])).unwrap();
            assert_eq!(
                authorities(&out),
                vec![want.to_vec()],
                "{:?}",
                String::from_utf8_lossy(sent)
            );
        }
    }

    #[test]
    fn every_other_header_and_frame_is_unchanged() {
        let input = connection(&[request(SOCKET)]);
        let out = rewrite_all(&input).unwrap();
        let before = header_blocks(&input).unwrap();
        let after = header_blocks(&out).unwrap();
        assert_eq!(after.len(), 1);
        let mut want = before[0].headers.clone();
        for (n, v) in &mut want {
            if n == b":authority" {
                *v = b"localhost".to_vec();
            }
        }
        assert_eq!(after[0].headers, want);
        // SETTINGS and DATA frames are forwarded byte for byte.
        let settings = client_frame(0x4, 0, 0, &[]);
        assert_eq!(&out[PREFACE.len()..PREFACE.len() + settings.len()], &settings[..]);
        assert!(out.ends_with(&client_frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0])));
    }

    #[test]
    fn a_dynamic_table_reference_to_a_refused_authority_is_rewritten_again() {
        // The client's encoder indexes ":authority: <path>" on the first request and sends the
        // later ones as a one-byte index into its dynamic table.
        let input = connection(&[request(SOCKET), request(SOCKET), request(SOCKET)]);
        let blocks = header_blocks(&input).unwrap();
        assert_eq!(blocks.len(), 3);
        let out = rewrite_all(&input).unwrap();
        assert_eq!(authorities(&out), vec![b"localhost".to_vec(); 3]);
        let mut r = AuthorityRewriter::new();
        r.feed(&input).unwrap();
        assert_eq!(r.rewritten(), 3);
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_output() {
        let input = connection(&[request(SOCKET), request(b"localhost"), request(ENCODED)]);
        let whole = rewrite_all(&input).unwrap();
        let mut r = AuthorityRewriter::new();
        let mut out = Vec::new();
        for b in &input {
            r.feed(std::slice::from_ref(b)).unwrap();
            out.extend(r.take_output());
        }
        assert_eq!(out, whole);
    }

    #[test]
    fn continuation_padding_and_priority_are_handled() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode(as_pairs(&request(SOCKET)));
        let (a, b) = block.split_at(block.len() / 2);
        let mut headers = vec![3u8]; // pad length
        headers.extend([0x80, 0, 0, 0, 16]); // exclusive dependency on stream 0, weight 16
        headers.extend(a);
        headers.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(client_frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
            1,
            &headers,
        ));
        input.extend(client_frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, b));
        let out = rewrite_all(&input).unwrap();
        let blocks = header_blocks(&out).unwrap();
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].end_stream);
        assert_eq!(authorities(&out), vec![b"localhost".to_vec()]);
        // One HEADERS frame with the priority fields kept, no padding, END_HEADERS set.
        let h = &out[PREFACE.len()..];
        assert_eq!(h[3], FRAME_HEADERS);
        assert_eq!(h[4], FLAG_END_STREAM | FLAG_PRIORITY | FLAG_END_HEADERS);
        assert_eq!(&h[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 5], &[0x80, 0, 0, 0, 16]);
    }

    #[test]
    fn a_large_block_is_split_into_frames_no_larger_than_the_default_max() {
        let mut r = request(SOCKET);
        r.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let out = rewrite_all(&connection(&[r.clone()])).unwrap();
        let mut rest = &out[PREFACE.len()..];
        let mut types = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            assert!(len <= MAX_EMITTED_FRAME);
            types.push(rest[3]);
            rest = &rest[FRAME_HEADER_LEN + len..];
        }
        assert_eq!(types, [0x4, FRAME_HEADERS, FRAME_CONTINUATION, FRAME_CONTINUATION, 0x0]);
        let blocks = header_blocks(&out).unwrap();
        assert_eq!(blocks[0].headers.last().unwrap().1.len(), 40_000);
    }

    #[test]
    fn protocol_violations_fail_the_connection_for_good() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode(as_pairs(&request(SOCKET)));
        let mut input = PREFACE.to_vec();
        input.extend(client_frame(FRAME_HEADERS, 0, 1, &block));
        input.extend(client_frame(0x0, 0, 1, b"x"));
        let mut r = AuthorityRewriter::new();
        assert_eq!(
            r.feed(&input),
            Err(RewriteError::InterruptedHeaderBlock { stream: 1, expected: 1 })
        );
        assert!(matches!(r.feed(b""), Err(RewriteError::Failed(_))));

        let mut stray = PREFACE.to_vec();
        stray.extend(client_frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &block));
        assert_eq!(rewrite_all(&stray), Err(RewriteError::StrayContinuation { stream: 1 }));

        let mut bad_pad = PREFACE.to_vec();
        bad_pad.extend(client_frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            1,
            &[200, 1, 2],
        ));
        assert_eq!(rewrite_all(&bad_pad), Err(RewriteError::BadHeadersFrame { stream: 1 }));

        let mut bad_hpack = PREFACE.to_vec();
        bad_hpack.extend(client_frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0xff, 0xff]));
        assert!(matches!(
            rewrite_all(&bad_hpack),
            Err(RewriteError::Hpack { stream: 1, .. })
        ));

        let mut huge = PREFACE.to_vec();
        huge.extend(client_frame(FRAME_HEADERS, 0, 1, &vec![0; MAX_HEADER_BLOCK + 1]));
        assert_eq!(rewrite_all(&huge), Err(RewriteError::HeaderBlockTooLarge { stream: 1 }));
    }

    #[test]
    fn a_stream_without_the_preface_passes_through() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(rewrite_all(input).unwrap(), input);
        // A partial preface is held back until it is decided.
        let mut r = AuthorityRewriter::new();
        r.feed(&PREFACE[..10]).unwrap();
        assert!(r.output().is_empty());
        r.feed(&PREFACE[10..]).unwrap();
        assert_eq!(r.output(), PREFACE);
    }

    #[test]
    fn integers_use_the_continuation_bytes_of_rfc_7541() {
        // RFC 7541 C.1.1-C.1.3.
        let mut out = Vec::new();
        encode_integer(&mut out, 10, 5, 0);
        assert_eq!(out, [0x0a]);
        out.clear();
        encode_integer(&mut out, 1337, 5, 0);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        encode_integer(&mut out, 42, 8, 0);
        assert_eq!(out, [0x2a]);
    }
}
