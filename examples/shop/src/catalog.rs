//! The products the shop sells, with their prices: the catalog every service agrees on
//! (inventory keeps the stock, order prices the lines).

use serde::{Deserialize, Serialize};

/// A product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Stock-keeping unit: the product's id.
    pub sku: String,
    /// What a customer reads.
    pub name: String,
    /// Price per unit, in cents.
    pub price_cents: i64,
    /// Units in stock when a fresh shop starts.
    pub initial_stock: i64,
}

/// The catalog: a fixed list, the same in every process of one deployment.
#[derive(Clone, Debug)]
pub struct Catalog {
    products: Vec<Product>,
}

impl Catalog {
    /// The reference shop's products.
    pub fn reference() -> Catalog {
        let product = |sku: &str, name: &str, price_cents: i64, initial_stock: i64| Product {
            sku: sku.to_owned(),
            name: name.to_owned(),
            price_cents,
            initial_stock,
        };
        Catalog {
            products: vec![
                product("tea-earl-grey", "Earl Grey, 100 g", 650, 10_000),
                product("tea-sencha", "Sencha, 100 g", 890, 10_000),
                product("mug-stoneware", "Stoneware mug", 1_450, 5_000),
                product("teapot-cast-iron", "Cast-iron teapot", 4_900, 1_000),
                product("kettle-gooseneck", "Gooseneck kettle", 7_900, 200),
                product("infuser-steel", "Steel infuser", 390, 20_000),
                product("gift-card-25", "Gift card, 25 EUR", 2_500, 1_000_000),
                product("limited-print", "Limited print, signed", 12_000, 3),
            ],
        }
    }

    /// A catalog of exactly these products (tests, other deployments).
    pub fn new(products: Vec<Product>) -> Catalog {
        Catalog { products }
    }

    /// The product with this sku.
    pub fn get(&self, sku: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.sku == sku)
    }

    /// Every product.
    pub fn products(&self) -> &[Product] {
        &self.products
    }
}
