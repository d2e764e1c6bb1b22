//! The response body type of the layer's service.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use idem_core::BoxError;

/// The body of every response the layer returns: the handler's own body passed through, a buffered or
/// replayed body, or a problem document.
pub struct ResponseBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
}

impl ResponseBody {
    /// Wraps bytes that are already in memory.
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            inner: Full::new(bytes).map_err(|never| match never {}).boxed_unsync(),
        }
    }

    /// Wraps the handler's body, to pass it through unbuffered.
    pub(crate) fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: body.map_err(Into::into).boxed_unsync(),
        }
    }

    /// Streams `frames` already read from a body, then the rest of that body.
    pub(crate) fn prefixed(frames: VecDeque<Frame<Bytes>>, rest: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        Self {
            inner: Prefixed { frames, rest }.boxed_unsync(),
        }
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Prefixed {
    frames: VecDeque<Frame<Bytes>>,
    rest: UnsyncBoxBody<Bytes, BoxError>,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.is_end_stream()
    }
}
