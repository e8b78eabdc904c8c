-- One insert may cover several partitions' offset ranges (one statement per flush instead of one
-- per partition: each insert pays the views' fixed cost). Every range of such an insert records the
-- insert's deduplication token in Batch, so a replay finds all of the insert's ranges and rebuilds
-- the identical batch. '' = a single-range insert whose token is the range's own.
ALTER TABLE $db.pipeline_batches $on_cluster ADD COLUMN IF NOT EXISTS Batch String DEFAULT '';
