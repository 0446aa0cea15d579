"""The registers' records and the warehouse that keeps every version of them."""
