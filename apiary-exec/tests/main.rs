//! Integration tests of the bees: budgets and spilling, deadlines, the queue, the colony
//! temperature and task abandonment — on real DataFusion queries.

mod abandonment;
mod budgets;
mod deadline;
mod queue;
mod scratch;
mod support;
mod temperature;
