"""The synthetic domain: a known risk process and the records it leaves, for tests,
demos and benchmarks. It imports the product's schema, geography, catalogue and policy;
no product module imports it."""
