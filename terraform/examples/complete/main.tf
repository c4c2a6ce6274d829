# A complete rouse installation on AWS: the cluster, then rouse on it.
#
# Two stages, because the Nomad and Consul providers can only talk to a cluster that
# exists and is reachable (its APIs are never public):
#   1. terraform apply -target=module.cluster
#   2. open SSM port forwards to a server (see README), then terraform apply

provider "aws" {
  region = var.region
}

module "cluster" {
  source = "../../modules/cluster-aws"

  name = var.name

  # The rouse binary the clients run as the concurrency guard of revisions with a hard
  # `concurrency` limit, with raw_exec on (see docs/terraform.md); "" = no guard support.
  rouse_binary_url    = var.rouse_binary_url
  rouse_binary_sha256 = var.rouse_binary_sha256
}

provider "nomad" {
  address   = var.nomad_address
  secret_id = module.cluster.nomad_management_token
}

provider "consul" {
  address    = var.consul_address
  token      = module.cluster.consul_management_token
  datacenter = module.cluster.datacenter
}

module "rouse" {
  source = "../../modules/rouse"

  domain      = var.domain
  image       = var.rouse_image
  datacenters = [module.cluster.datacenter]

  # One gateway on every client of the autoscaling group, on the port the load balancer
  # targets: the group grows, the gateways follow.
  gateway_mode        = "system"
  gateway_node_class  = module.cluster.client_node_class
  gateway_public_port = module.cluster.gateway_port
}
