variable "domain" {
  description = "DNS domain of the public URLs: service hello in namespace default answers at hello.default.<domain>. Point *.<domain> at the gateways."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.domain))
    error_message = "The domain must be a lower-case DNS name such as \"apps.example.com\"."
  }
}

variable "namespace" {
  description = "Nomad namespace the gateway and scaler jobs (and their Nomad Variables) live in. It must exist."
  type        = string
  default     = "default"

  validation {
    condition     = can(regex("^[a-zA-Z0-9-]{1,128}$", var.namespace))
    error_message = "A Nomad namespace name has 1-128 letters, digits or dashes."
  }
}

variable "managed_namespaces" {
  description = "Nomad namespaces that hold rouse revisions. The scaler may list, read and scale jobs in these and nowhere else."
  type        = list(string)
  default     = ["default"]

  validation {
    condition     = length(var.managed_namespaces) > 0 && alltrue([for ns in var.managed_namespaces : can(regex("^[a-zA-Z0-9-]{1,128}$", ns))])
    error_message = "List at least one namespace, by exact name (no wildcards: the scaler's rights stay enumerable)."
  }
}

variable "region" {
  description = "Nomad region of the jobs."
  type        = string
  default     = "global"
}

variable "datacenters" {
  description = "Nomad datacenters the gateway and scaler may run in (globs allowed, as in a jobspec)."
  type        = list(string)
  default     = ["*"]

  validation {
    condition     = length(var.datacenters) > 0
    error_message = "List at least one datacenter (\"*\" means all)."
  }
}

variable "driver" {
  description = "Task driver of the gateway and scaler: \"docker\" runs var.image; \"raw_exec\" runs the binary at var.rouse_binary on the client."
  type        = string
  default     = "docker"

  validation {
    condition     = contains(["docker", "raw_exec"], var.driver)
    error_message = "The driver must be \"docker\" or \"raw_exec\"."
  }
}

variable "image" {
  description = "Container image with the rouse binary as entrypoint, pinned by tag or digest (driver = \"docker\")."
  type        = string
  default     = ""

  validation {
    condition     = var.driver != "docker" || var.image != ""
    error_message = "Set image when driver = \"docker\"."
  }
}

variable "rouse_binary" {
  description = "Absolute path of the rouse binary on every client that may run the gateway or scaler (driver = \"raw_exec\")."
  type        = string
  default     = "/usr/local/bin/rouse"

  validation {
    condition     = startswith(var.rouse_binary, "/")
    error_message = "The rouse binary path must be absolute."
  }
}

variable "consul_address" {
  description = "Consul HTTP API (host:port) as seen from a Nomad client; the jobs use host networking, so the local agent is 127.0.0.1:8500."
  type        = string
  default     = "127.0.0.1:8500"

  validation {
    condition     = can(regex("^[^:/ ]+:[0-9]{1,5}$", var.consul_address))
    error_message = "Give the Consul address as host:port, without a scheme."
  }
}

variable "nomad_address" {
  description = "Nomad HTTP API for the scaler. \"\" uses the Task API socket Nomad puts in the task's secrets dir, which needs no address or TLS material."
  type        = string
  default     = ""

  validation {
    condition     = var.nomad_address == "" || can(regex("^(https?|unix)://", var.nomad_address))
    error_message = "The Nomad address must be empty or start with http://, https:// or unix://."
  }
}

variable "log_level" {
  description = "Log level of the gateway and scaler."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.log_level)
    error_message = "The log level must be debug, info, warn or error."
  }
}

variable "consul_acl_enabled" {
  description = "Create Consul ACL policies and tokens for the gateway and scaler. Turn off only for a Consul without ACLs."
  type        = bool
  default     = true
}

variable "nomad_acl_enabled" {
  description = "Create the Nomad ACL policy the scaler's workload identity gets. Turn off only for a Nomad without ACLs."
  type        = bool
  default     = true
}

variable "gateway_job_name" {
  description = "Nomad job ID of the gateway. Its public port registers in Consul as <name>-http."
  type        = string
  default     = "rouse-gateway"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.gateway_job_name))
    error_message = "Use lower-case letters, digits and dashes (it is also a DNS label in Consul)."
  }
}

variable "gateway_mode" {
  description = "\"system\" runs one gateway on every node of var.gateway_node_class (pair with a load balancer over those nodes); \"service\" runs var.gateway_count gateways wherever they fit."
  type        = string
  default     = "system"

  validation {
    condition     = contains(["system", "service"], var.gateway_mode)
    error_message = "The gateway mode must be \"system\" or \"service\"."
  }
}

variable "gateway_count" {
  description = "Number of gateways when gateway_mode = \"service\"."
  type        = number
  default     = 2

  validation {
    condition     = var.gateway_count >= 1 && floor(var.gateway_count) == var.gateway_count
    error_message = "The gateway count must be a whole number of at least 1."
  }
}

variable "gateway_node_class" {
  description = "Run gateways only on Nomad clients with this node_class; \"\" = any client."
  type        = string
  default     = ""
}

variable "gateway_public_port" {
  description = "Static host port every gateway serves public HTTP on; load balancers and DNS point here."
  type        = number
  default     = 80

  validation {
    condition     = var.gateway_public_port >= 1 && var.gateway_public_port <= 65535 && floor(var.gateway_public_port) == var.gateway_public_port
    error_message = "The public port must be a whole number between 1 and 65535."
  }
}

variable "gateway_resources" {
  description = "CPU (MHz) and memory (MiB) reserved per gateway."
  type = object({
    cpu    = number
    memory = number
  })
  default = {
    cpu    = 500
    memory = 256
  }

  validation {
    condition     = var.gateway_resources.cpu >= 100 && var.gateway_resources.memory >= 64
    error_message = "Give the gateway at least 100 MHz and 64 MiB."
  }
}

variable "scaler_job_name" {
  description = "Nomad job ID of the scaler; its ACL policy and Nomad Variable are keyed by it."
  type        = string
  default     = "rouse-scaler"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.scaler_job_name))
    error_message = "Use lower-case letters, digits and dashes (it is also a DNS label in Consul)."
  }
}

variable "scaler_count" {
  description = "Scaler replicas. One leads through the Consul lock on rouse/scaler/leader; the others take over within seconds when it goes."
  type        = number
  default     = 2

  validation {
    condition     = var.scaler_count >= 2 && floor(var.scaler_count) == var.scaler_count
    error_message = "Run at least 2 scalers, so losing one node does not stop autoscaling."
  }
}

variable "scaler_node_class" {
  description = "Run scalers only on Nomad clients with this node_class; \"\" = any client."
  type        = string
  default     = ""
}

variable "scaler_resources" {
  description = "CPU (MHz) and memory (MiB) reserved per scaler."
  type = object({
    cpu    = number
    memory = number
  })
  default = {
    cpu    = 200
    memory = 128
  }

  validation {
    condition     = var.scaler_resources.cpu >= 50 && var.scaler_resources.memory >= 32
    error_message = "Give the scaler at least 50 MHz and 32 MiB."
  }
}
