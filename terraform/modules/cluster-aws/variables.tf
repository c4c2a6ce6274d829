variable "name" {
  description = "Prefix of every resource name and the value of the cluster tag agents auto-join by."
  type        = string
  default     = "rouse"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "Use 2-21 lower-case letters, digits or dashes, starting with a letter (it prefixes load balancer names, which are capped at 32 characters)."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC. Everything but the gateway port is reachable only from inside it."
  type        = string
  default     = "10.60.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) <= 22
    error_message = "Give an IPv4 CIDR of /22 or larger (it is split into three subnets)."
  }
}

variable "availability_zones" {
  description = "Three availability zones for the subnets and the servers; [] = the region's first three."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == 3
    error_message = "List exactly three zones, or none."
  }
}

variable "ami_id" {
  description = "AMI for every node (Debian 12 or Ubuntu 24.04 style, with cloud-init and apt); \"\" = the latest official Debian 12 amd64."
  type        = string
  default     = ""
}

variable "nomad_version" {
  description = "Nomad version installed on every node (apt package nomad=<version>-1, held)."
  type        = string
  default     = "1.11.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.nomad_version))
    error_message = "Pin an exact version such as 1.11.1."
  }
}

variable "consul_version" {
  description = "Consul version installed on every node (apt package consul=<version>-1, held)."
  type        = string
  default     = "1.21.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.consul_version))
    error_message = "Pin an exact version such as 1.21.0."
  }
}

variable "datacenter" {
  description = "Consul and Nomad datacenter name."
  type        = string
  default     = "dc1"

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.datacenter))
    error_message = "Use lower-case letters, digits and dashes."
  }
}

variable "server_instance_type" {
  description = "EC2 instance type of the three Nomad + Consul servers."
  type        = string
  default     = "t3.small"
}

variable "client_instance_type" {
  description = "EC2 instance type of the Nomad clients (they run the gateway, the scaler and every revision)."
  type        = string
  default     = "t3.large"
}

variable "client_min_size" {
  description = "Fewest Nomad clients in the autoscaling group."
  type        = number
  default     = 2

  validation {
    condition     = var.client_min_size >= 1
    error_message = "Keep at least one client."
  }
}

variable "client_max_size" {
  description = "Most Nomad clients in the autoscaling group."
  type        = number
  default     = 6

  validation {
    condition     = var.client_max_size >= var.client_min_size
    error_message = "client_max_size must be at least client_min_size."
  }
}

variable "client_desired_capacity" {
  description = "Nomad clients to start with."
  type        = number
  default     = 3

  validation {
    condition     = var.client_desired_capacity >= var.client_min_size && var.client_desired_capacity <= var.client_max_size
    error_message = "client_desired_capacity must lie between client_min_size and client_max_size."
  }
}

variable "client_node_class" {
  description = "Nomad node_class of the clients; give the same to the rouse module's gateway_node_class to pin gateways to them."
  type        = string
  default     = "rouse"
}

variable "gateway_port" {
  description = "Port the rouse gateway serves on each client: the only port open to the internet, behind the public load balancer's port 80."
  type        = number
  default     = 80

  validation {
    condition     = var.gateway_port >= 1 && var.gateway_port <= 65535
    error_message = "The gateway port must be between 1 and 65535."
  }
}

variable "ingress_cidrs" {
  description = "Source ranges allowed to reach the gateway port (the load balancer keeps client addresses, so this is the public audience)."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.ingress_cidrs : can(cidrnetmask(c))])
    error_message = "Every entry must be an IPv4 CIDR."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "rouse_binary_url" {
  description = "URL of a rouse release binary for the clients' CPU (linux/amd64 or linux/arm64), installed as /usr/local/bin/rouse and advertised as meta.rouse_bin, with raw_exec enabled, so they can run the concurrency guard of revisions with a hard concurrency limit. \"\" = no guard support: such revisions are never placed on these clients (Nomad finds their meta.rouse_bin constraint unmet), and raw_exec stays off."
  type        = string
  default     = ""

  validation {
    # Characters of a URL with no shell meaning inside double quotes: it is pasted into
    # the clients' setup script.
    condition     = var.rouse_binary_url == "" || can(regex("^https?://[A-Za-z0-9._~:/?#@!&()*+,;=%-]+$", var.rouse_binary_url))
    error_message = "rouse_binary_url must be an http(s) URL without spaces, quotes, backslashes, $ or backticks (for example https://github.com/rouse-run/rouse/releases/download/v0.1.0/rouse-linux-amd64), or \"\"."
  }
  validation {
    condition     = var.rouse_binary_url == "" || var.rouse_binary_sha256 != ""
    error_message = "rouse_binary_url is set but rouse_binary_sha256 is not: give the binary's SHA-256 (sha256sum rouse-linux-amd64), which every client checks before installing it."
  }
}

variable "rouse_binary_sha256" {
  description = "SHA-256 of the file at rouse_binary_url, 64 lower-case hex digits; required with it. A client whose download does not match fails its setup and never starts Nomad."
  type        = string
  default     = ""

  validation {
    condition     = var.rouse_binary_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.rouse_binary_sha256))
    error_message = "rouse_binary_sha256 must be 64 lower-case hex digits (the first field of sha256sum's output), or \"\"."
  }
  validation {
    condition     = var.rouse_binary_sha256 == "" || var.rouse_binary_url != ""
    error_message = "rouse_binary_sha256 is set but rouse_binary_url is not: set both (the clients download the binary from the URL and check it against this), or neither."
  }
}
