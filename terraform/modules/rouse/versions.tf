terraform {
  # 1.9: variable validations may refer to other variables (image is required for docker).
  required_version = ">= 1.9.0"

  required_providers {
    nomad = {
      source  = "hashicorp/nomad"
      version = "~> 2.5"
    }
    consul = {
      source  = "hashicorp/consul"
      version = "~> 2.21"
    }
  }
}
