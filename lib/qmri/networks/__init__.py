"""Networks of the product (built from MONAI blocks) and their losses."""
