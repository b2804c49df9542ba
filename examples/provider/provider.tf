terraform {
  required_providers {
    aml = {
      source = "openaml/aml"
    }
  }
}

# Every argument is optional: `provider "aml" {}` is a complete configuration.
provider "aml" {
  # Largest snapshot of a source_directory a run may take (default 300 MB),
  # counted after .amlignore / .gitignore rules are applied.
  snapshot_max_bytes = 500 * 1024 * 1024

  # Most files a snapshot may hold (default 2000).
  snapshot_max_files = 5000
}
