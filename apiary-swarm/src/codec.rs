//! Apiary's `PhysicalExtensionCodec`: how fragments cross the meadow.
//!
//! Fragments are serialized with `datafusion-proto`. DataFusion's own operators (the Parquet
//! scan with its cells, partition values, statistics and predicate; filters; projections; partial
//! aggregations) are encoded by datafusion-proto itself; this codec handles Apiary's own nodes —
//! a [`ChamberExec`] — and refuses anything else by name.

use std::sync::Arc;

use apiary_exec::{BeePool, ChamberExec};
use datafusion::common::{exec_err, internal_err};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

/// The tag of each of Apiary's nodes in the codec's buffer.
const CHAMBER: &[u8] = b"apiary.chamber.v1";

/// Encodes and decodes Apiary's execution plan nodes. Decoding a chamber needs the decoding
/// node's own bees.
#[derive(Debug, Clone)]
pub struct ApiaryCodec {
    pool: Option<BeePool>,
}

impl ApiaryCodec {
    /// A codec that decodes a chamber into one of `pool`'s bees (`None`: a node without bees,
    /// where a chamber is refused by name).
    pub fn new(pool: Option<BeePool>) -> Self {
        Self { pool }
    }
}

impl PhysicalExtensionCodec for ApiaryCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (buf, inputs) {
            (CHAMBER, [input]) => match &self.pool {
                Some(pool) => Ok(Arc::new(ChamberExec::new(Arc::clone(input), pool.clone()))),
                None => exec_err!("a ChamberExec arrived at a node without bees"),
            },
            _ => internal_err!(
                "unknown Apiary plan node {:?} with {} inputs",
                String::from_utf8_lossy(buf),
                inputs.len()
            ),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if node.is::<ChamberExec>() {
            buf.extend_from_slice(CHAMBER);
            return Ok(());
        }
        exec_err!("{} cannot be sent to another node", node.name())
    }
}
