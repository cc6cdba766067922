//! Writing a family from a collector: one descriptor (HELP, TYPE), then its
//! samples. The names are given without the `_total` the encoder adds to
//! counters.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};

/// One unlabelled sample.
pub(super) fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> fmt::Result {
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One sample per label set (nothing at all when there is none).
pub(super) fn labelled<'v, M: EncodeMetric, const N: usize>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = ([(&'static str, &'v str); N], M)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    let Some(kind) = samples.peek().map(|(_, m)| m.metric_type()) else {
        return Ok(());
    };
    let mut family = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
