//! Leafcutter sizing: a leafcutter bee cuts each piece of leaf to what she can carry, and Apiary
//! cuts each cell to what one bee can hold.
//!
//! A cell decoded in full takes several times its compressed size in memory (decompression,
//! Arrow buffers, a few operators' working sets). With `bee memory / 8` as the target, a scan of
//! one whole cell stays well inside one bee's budget. The target is clamped to 1 MiB … 256 MiB;
//! no cell exceeds twice the target (the writer closes a cell once it reaches the target and
//! feeds it at most a quarter of the target at a time).
//!
//! Row groups are cut for the bees that read the cell: DataFusion splits a file between a query's
//! partitions only where a row group ends, so a cell of one large row group is read by one bee
//! however many the query holds. Row groups end at [`Leafcutter::ROW_GROUP_ROWS`] rows (or a
//! quarter of the target, whichever comes first).

/// The cell-size policy, derived from one bee's memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leafcutter {
    /// `None`: not chosen yet — [`Leafcutter::DEFAULT_BEE_MEMORY`] until the node's bees decide
    /// ([`Leafcutter::or_for_bee_memory`]).
    bee_memory: Option<u64>,
    target_override: Option<u64>,
    row_group_rows: usize,
}

const MIB: u64 = 1024 * 1024;

impl Default for Leafcutter {
    /// The policy for bees of [`Leafcutter::DEFAULT_BEE_MEMORY`], until a node sizes it for its
    /// own ([`Leafcutter::or_for_bee_memory`]).
    fn default() -> Self {
        Self {
            bee_memory: None,
            target_override: None,
            row_group_rows: Self::ROW_GROUP_ROWS,
        }
    }
}

impl Leafcutter {
    /// One bee of a 4 GiB, 4-core board.
    pub const DEFAULT_BEE_MEMORY: u64 = 1024 * MIB;
    /// How many times a cell's size one bee must be able to hold.
    pub const BEE_TO_CELL: u64 = 8;
    /// Smallest target derived from a bee's memory: 1 MiB.
    pub const MIN_TARGET: u64 = MIB;
    /// Largest target derived from a bee's memory: 256 MiB.
    pub const MAX_TARGET: u64 = 256 * MIB;
    /// Smallest target accepted from [`Leafcutter::with_target_cell_bytes`].
    pub const MIN_EXPLICIT_TARGET: u64 = 16 * 1024;
    /// Most rows in one row group: 128 Ki (DuckDB writes 122,880). Parquet's default, 1 Mi,
    /// gave a 1.5 M-row cell row groups of 1 Mi and 0.45 Mi rows, read 70 / 30 by two bees.
    pub const ROW_GROUP_ROWS: usize = 128 * 1024;

    /// The policy for bees of `bee_memory` bytes.
    pub fn for_bee_memory(bee_memory: u64) -> Self {
        Self {
            bee_memory: Some(bee_memory),
            ..Self::default()
        }
    }

    /// This policy for bees of `bee_memory` bytes, unless it was made for a bee size already
    /// ([`Leafcutter::for_bee_memory`]); its other settings stay. How a node sizes the cells of
    /// a policy that only set a target or row groups.
    pub fn or_for_bee_memory(mut self, bee_memory: u64) -> Self {
        self.bee_memory.get_or_insert(bee_memory);
        self
    }

    /// Sets the target cell size explicitly (e.g. for tests or tiny devices).
    pub fn with_target_cell_bytes(mut self, bytes: u64) -> Self {
        self.target_override = Some(bytes.max(Self::MIN_EXPLICIT_TARGET));
        self
    }

    /// Sets the most rows a row group holds (at least 1), in place of
    /// [`Leafcutter::ROW_GROUP_ROWS`].
    pub fn with_row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.max(1);
        self
    }

    /// The memory budget of one bee, in bytes, that the policy was derived from.
    pub fn bee_memory(&self) -> u64 {
        self.bee_memory.unwrap_or(Self::DEFAULT_BEE_MEMORY)
    }

    /// The size a cell is closed at.
    pub fn target_cell_bytes(&self) -> u64 {
        self.target_override.unwrap_or_else(|| {
            (self.bee_memory() / Self::BEE_TO_CELL).clamp(Self::MIN_TARGET, Self::MAX_TARGET)
        })
    }

    /// No cell is larger than this.
    pub fn max_cell_bytes(&self) -> u64 {
        2 * self.target_cell_bytes()
    }

    /// Row groups: a quarter of a cell, so row-group pruning has something to skip and a row
    /// group in progress is small next to the bee.
    pub fn row_group_bytes(&self) -> u64 {
        (self.target_cell_bytes() / 4).max(64 * 1024)
    }

    /// Row groups hold at most this many rows, so that the bees of a query share even a single
    /// cell (see the module's docs).
    pub fn row_group_rows(&self) -> usize {
        self.row_group_rows
    }

    /// How many cells (one per partition in progress) a writer keeps open at once for rows of
    /// about `row_bytes` bytes in memory: together they may buffer half a bee. An open cell holds
    /// up to two row groups (one encoding, the one before it closing), each at most the byte cap
    /// or the row cap's rows of that width, and its columns' queues.
    pub fn open_cells(&self, row_bytes: u64) -> usize {
        let row_group = self
            .row_group_bytes()
            .min(self.row_group_rows() as u64 * row_bytes.max(1));
        let per_cell = 2 * row_group + 10 * MIB;
        ((self.bee_memory() / 2) / per_cell).clamp(1, 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_follows_the_bee_budget_within_bounds() {
        assert_eq!(Leafcutter::default().target_cell_bytes(), 128 * MIB);
        assert_eq!(
            Leafcutter::for_bee_memory(256 * MIB).target_cell_bytes(),
            32 * MIB
        );
        assert_eq!(Leafcutter::for_bee_memory(MIB).target_cell_bytes(), MIB);
        assert_eq!(
            Leafcutter::for_bee_memory(64 * 1024 * MIB).target_cell_bytes(),
            256 * MIB
        );
        let l = Leafcutter::default().with_target_cell_bytes(100);
        assert_eq!(l.target_cell_bytes(), Leafcutter::MIN_EXPLICIT_TARGET);
        assert_eq!(l.max_cell_bytes(), 2 * Leafcutter::MIN_EXPLICIT_TARGET);
        assert!(Leafcutter::default().open_cells(100_000) >= 1);
        // Narrow rows make small row groups: more cells fit in the same half bee.
        assert!(Leafcutter::default().open_cells(30) > Leafcutter::default().open_cells(1000));
        assert_eq!(Leafcutter::default().row_group_rows(), 128 * 1024);
        assert_eq!(l.with_row_group_rows(0).row_group_rows(), 1);
    }
}
