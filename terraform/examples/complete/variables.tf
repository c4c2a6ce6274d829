variable "region" {
  description = "AWS region to build the cluster in."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name prefix of the cluster's resources."
  type        = string
  default     = "rouse"
}

variable "domain" {
  description = "Public domain of the services; after apply, point *.<domain> at the gateway_lb_dns_name output."
  type        = string
}

variable "rouse_image" {
  description = "Container image of rouse, pinned by tag or digest."
  type        = string
}

variable "rouse_binary_url" {
  description = "URL of the rouse release binary for the clients (linux/amd64 with the default AMI), which lets them run revisions with a hard concurrency limit and enables raw_exec on them; \"\" = such revisions are not placed. See cluster-aws."
  type        = string
  default     = ""
}

variable "rouse_binary_sha256" {
  description = "SHA-256 of the file at rouse_binary_url (64 lower-case hex digits); required with it."
  type        = string
  default     = ""
}

variable "nomad_address" {
  description = "Where Terraform reaches Nomad's API: the APIs are VPC-only, so by default an SSM port forward to a server on localhost (see README)."
  type        = string
  default     = "http://127.0.0.1:4646"
}

variable "consul_address" {
  description = "Where Terraform reaches Consul's API (host:port), by default an SSM port forward like nomad_address."
  type        = string
  default     = "127.0.0.1:8500"
}
