terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
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
