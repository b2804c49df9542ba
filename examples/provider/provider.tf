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

# For teams and CI: workspaces with backend = "shared" keep their records in
# PostgreSQL and their files in an S3-compatible bucket that every machine
# reaches. Credentials left out come from PG* and AWS_* environment variables.
variable "aml_postgres" {
  type      = string
  sensitive = true
  default   = "postgres://aml@db.example.com:5432/aml"
}

provider "aml" {
  alias = "team"

  shared_backend {
    postgres = var.aml_postgres
    s3 {
      bucket   = "ml-artifacts"
      prefix   = "aml"
      endpoint = "https://minio.example.com:9000"
    }
  }
}
