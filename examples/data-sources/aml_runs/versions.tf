# Makes this example a complete configuration of its own (terraform validate).
terraform {
  required_providers {
    aml = {
      source = "openaml/aml"
    }
  }
}
